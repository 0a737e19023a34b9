"""The endpoint table on the gateway's listener: a request no route takes becomes a
:class:`~gatekeeper.endpoints.Call`, the dispatcher answers, and the answer is written.

Two ways in, one dispatcher:

- :func:`answer_now`, on the connection's callback path, for a request whose body is in hand:
  a synchronous endpoint (``/health``) is answered and written at once, without a task;
- :func:`serve_call`, from a task: the body is read first (bounded: 413 beyond the table's
  ``max_body``), then the same dispatch.

A :class:`~gatekeeper.endpoints.Reply` is written in one ``send_bytes``; a
:class:`~gatekeeper.endpoints.StreamReply` with chunked framing (close-delimited for
HTTP/1.0), chunk by chunk with backpressure, stopped when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, Protocol

from gatekeeper.endpoints import Call, Dispatcher, Reply, StreamReply, problem_reply
from gatekeeper.gateway.messages import Headers, ProxyRequest, status_line

__all__ = ["HttpProtocol", "answer_now", "call_of", "serve_call", "write_result"]


class HttpProtocol(Protocol):
    """What this module needs of the client connection (``gateway.protocol.HttpProtocol``)."""

    closed: bool
    keep_alive: bool
    response_started: bool
    disconnected: asyncio.Future[None] | None

    def send_bytes(
        self, status: int, headers: Headers, body: bytes, request: ProxyRequest
    ) -> None: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def connection_header(self, version_10: bool) -> bytes: ...


Result = Reply | StreamReply
_NO_BODY = frozenset({204, 304})


def call_of(request: ProxyRequest, body: bytes, request_id: str, conn: HttpProtocol) -> Call:
    """The :class:`Call` of ``request`` (its client address resolved already)."""
    target = request.target
    query = target.find(b"?")
    return Call(
        request.method,
        request.path,
        query_string=b"" if query == -1 else target[query + 1 :],
        headers=request.headers,
        client_ip=request.client_ip,
        request_id=request_id,
        body=body,
        is_disconnected=lambda: conn.closed,
    )


def answer_now(
    table: Dispatcher, request: ProxyRequest, conn: HttpProtocol, request_id: str
) -> int | Awaitable[int] | None:
    """Dispatch a request whose body is complete: the status when it was answered at once, an
    awaitable of it when the endpoint answers later, None when the body is too large for the
    table (the task path answers 413)."""
    body = request.body
    if body.received > table.max_body:
        return None
    result = table.dispatch(call_of(request, body.take(), request_id, conn))
    if isinstance(result, Reply):
        return _write_reply(conn, request, result)
    return write_result(conn, request, result)


async def serve_call(
    table: Dispatcher | None, request: ProxyRequest, conn: HttpProtocol, request_id: str
) -> int:
    """Read the body (bounded), dispatch, write; the status sent."""
    if table is None:
        reply = problem_reply(404, "not_found", f"no endpoint at {request.path}")
        reply.headers.append((b"x-request-id", request_id.encode("latin-1")))
        return _write_reply(conn, request, reply)
    body = request.body
    limit = table.max_body
    try:
        if (body.length or 0) > limit:
            raise ValueError
        data = await body.read_all(limit)
    except ValueError:
        # Larger than any built-in endpoint takes: refused unread (the connection closes).
        detail = f"the request body is larger than {limit} bytes"
        reply = problem_reply(413, "payload_too_large", detail)
        reply.headers.append((b"x-request-id", request_id.encode("latin-1")))
        return _write_reply(conn, request, reply)
    return await write_result(
        conn, request, table.dispatch(call_of(request, data, request_id, conn))
    )


async def write_result(
    conn: HttpProtocol, request: ProxyRequest, result: Result | Awaitable[Result]
) -> int:
    """Wait for ``result`` if it is pending, then write it; the status."""
    answer: Any = result
    if not isinstance(answer, Reply | StreamReply):
        answer = await answer
    if isinstance(answer, Reply):
        return _write_reply(conn, request, answer)
    return await _write_stream(conn, request, answer)


def _write_reply(conn: HttpProtocol, request: ProxyRequest, reply: Reply) -> int:
    conn.send_bytes(reply.status, reply.headers, reply.body, request)
    if not request.body.at_eof:
        conn.keep_alive = False  # an unread body: the connection cannot be reused
    return reply.status


async def _write_stream(conn: HttpProtocol, request: ProxyRequest, reply: StreamReply) -> int:
    status = reply.status
    head_only = request.method == "HEAD" or status in _NO_BODY
    version_10 = request.version == "1.0"
    parts = [status_line(status)]
    for name, value in reply.headers:
        parts += (name, b": ", value, b"\r\n")
    chunked = not head_only and not version_10
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif version_10:
        conn.keep_alive = False  # HTTP/1.0: the body ends when the connection closes
    conn.response_started = True
    parts += (conn.connection_header(version_10), b"\r\n")
    conn.write(b"".join(parts))
    chunks = reply.chunks
    try:
        if not head_only:
            await _pump(conn, chunks, chunked)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
    return status


async def _pump(conn: HttpProtocol, chunks: Any, chunked: bool) -> None:
    """Write every chunk, stopping when the client goes away (the producer may be waiting for
    its next event for a long time: it is cancelled rather than awaited)."""

    async def produce() -> None:
        async for chunk in chunks:
            if conn.closed:
                raise ConnectionError("client disconnected")
            if chunk:
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")

    if conn.disconnected is None or conn.disconnected.done():
        conn.disconnected = asyncio.get_running_loop().create_future()
    gone = conn.disconnected
    if conn.closed:
        raise ConnectionError("client disconnected")
    producing = asyncio.ensure_future(produce())
    await asyncio.wait((producing, gone), return_when=asyncio.FIRST_COMPLETED)
    if not producing.done():
        producing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producing
        conn.keep_alive = False
        raise ConnectionError("client disconnected")
    producing.result()
