"""The endpoint table on the gateway's listener: a request no route takes becomes a
:class:`~gatekeeper.endpoints.Call`, the dispatcher answers, and the answer is written.

Two ways, one dispatcher:

- :func:`dispatch_now`, on the exchange's callback path, for a request whose body is in hand
  (bodies up to 64 KiB with a ``Content-Length`` are read before the request starts): a
  synchronous endpoint (``/health``) is answered at once, without a task;
- :func:`serve_call`, in a task: the body is read first (bounded: 413 beyond the table's
  ``max_body``), then the same dispatch.

A :class:`~gatekeeper.endpoints.Reply` is written in one ``send_bytes``; a
:class:`~gatekeeper.endpoints.StreamReply` with chunked framing (close-delimited for
HTTP/1.0), chunk by chunk with backpressure, and its producer is stopped when the client goes
away. The dispatcher echoes the request id itself; ``extra`` are the fields every answer to
the request carries besides (CORS, from the exchange), added when the answer is written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from gatekeeper.endpoints import Call, Dispatcher, Reply, StreamReply, problem_reply
from gatekeeper.gateway.http.writer import Framing

if TYPE_CHECKING:
    from gatekeeper.gateway.http.messages import ProxyRequest
    from gatekeeper.gateway.http.protocol import HttpProtocol

__all__ = ["Result", "besides_id", "call_of", "dispatch_now", "serve_call", "write_result"]

Result = Reply | StreamReply
Headers = list[tuple[bytes, bytes]]
_REQUEST_ID = b"x-request-id"


def besides_id(fields: Headers | None) -> Headers | None:
    """``fields`` without the request id (the dispatcher echoes it), None when nothing is
    left: the usual case, a request without CORS, costs no list."""
    if not fields or (len(fields) == 1 and fields[0][0] == _REQUEST_ID):
        return None
    return [f for f in fields if f[0] != _REQUEST_ID] or None


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


def dispatch_now(
    table: Dispatcher, request: ProxyRequest, conn: HttpProtocol, request_id: str
) -> Result | Awaitable[Result] | None:
    """Dispatch a request whose body is complete and within the table's bound (the reply, or
    an awaitable of it); None when it is not (:func:`serve_call` reads or refuses it)."""
    body = request.body
    if not body.complete or body.received > table.max_body:
        return None
    return table.dispatch(call_of(request, body.take(), request_id, conn))


async def serve_call(
    table: Dispatcher,
    request: ProxyRequest,
    conn: HttpProtocol,
    request_id: str,
    extra: Headers | None = None,
) -> int:
    """Read the body (bounded), dispatch, write; the status sent."""
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
        return write_reply(conn, request, reply, extra)
    result = table.dispatch(call_of(request, data, request_id, conn))
    return await write_result(conn, request, result, extra)


async def write_result(
    conn: HttpProtocol,
    request: ProxyRequest,
    result: Result | Awaitable[Result],
    extra: Headers | None = None,
) -> int:
    """Wait for ``result`` if it is pending, then write it; the status."""
    answer: Any = result
    if not isinstance(answer, Reply | StreamReply):
        answer = await answer
    if isinstance(answer, Reply):
        return write_reply(conn, request, answer, extra)
    return await _write_stream(conn, request, answer, extra)


def write_reply(
    conn: HttpProtocol, request: ProxyRequest, reply: Reply, extra: Headers | None = None
) -> int:
    """Write a complete reply in one piece; the status."""
    conn.send_bytes(reply.status, reply.headers, reply.body, request, extra)
    return reply.status


async def _write_stream(
    conn: HttpProtocol, request: ProxyRequest, reply: StreamReply, extra: Headers | None
) -> int:
    head, mode = conn.response_head(request, reply.status, reply.headers, extra)
    conn.write(head)
    chunks = reply.chunks
    try:
        if mode is not Framing.NONE:
            await _pump(conn, chunks, mode is Framing.CHUNKED)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
    return reply.status


async def _pump(conn: HttpProtocol, chunks: Any, chunked: bool) -> None:
    """Write every chunk, stopping when the client goes away (the producer may wait a long
    time for its next event: it is cancelled rather than awaited)."""

    async def produce() -> None:
        async for chunk in chunks:
            if conn.closed:
                raise ConnectionError("client disconnected")
            if chunk:
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")

    if conn.closed:
        raise ConnectionError("client disconnected")
    if conn.disconnected is None or conn.disconnected.done():
        conn.disconnected = asyncio.get_running_loop().create_future()
    producing = asyncio.ensure_future(produce())
    await asyncio.wait((producing, conn.disconnected), return_when=asyncio.FIRST_COMPLETED)
    if not producing.done():
        producing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producing
        conn.keep_alive = False
        raise ConnectionError("client disconnected")
    producing.result()
