"""The endpoint table as an ASGI application, for libraries and tests (``httpx.ASGITransport``).

The same :class:`~gatekeeper.endpoints.dispatcher.Dispatcher` the gateway serves, behind the
ASGI protocol: the body is read whole and bounded (413 beyond ``max_body``), the client address
is the scope's ``gatekeeper.client_ip`` when a proxy in front resolved it, else the socket
peer; the request id is the client's ``X-Request-ID`` when sane. A streaming reply is sent
chunk by chunk and stopped when the client disconnects. ``lifespan``, if given, is an async
context manager factory run for the ASGI lifespan protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from gatekeeper.endpoints.call import Call
from gatekeeper.endpoints.dispatcher import Dispatcher
from gatekeeper.endpoints.reply import Reply, StreamReply, problem_reply
from gatekeeper.observability.logging import accept_request_id

__all__ = ["ASGIApp", "asgi_app"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]
Lifespan = Callable[[], AbstractAsyncContextManager[Any]]


class _TooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body (None: the client went away)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _call_of(scope: MutableMapping[str, Any], body: bytes, gone: list[bool]) -> Call:
    headers = [(bytes(k).lower(), bytes(v)) for k, v in scope.get("headers", ())]
    client = scope.get("client")
    client_ip = scope.get("gatekeeper.client_ip") or (client[0] if client else "")
    rid = None
    for name, value in headers:
        if name == b"x-request-id":
            rid = value
            break
    return Call(
        scope["method"],
        scope["path"],
        query_string=bytes(scope.get("query_string", b"")),
        headers=headers,
        client_ip=str(client_ip),
        request_id=accept_request_id(rid),
        body=body,
        is_disconnected=lambda: gone[0],
    )


async def _send_reply(send: Send, reply: Reply, head_only: bool) -> None:
    headers = [*reply.headers, (b"content-length", str(len(reply.body)).encode())]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head_only else reply.body})


async def _send_stream(send: Send, receive: Receive, reply: StreamReply, gone: list[bool]) -> None:
    await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})

    async def pump() -> None:
        async for chunk in reply.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone[0] = True

    pumping = asyncio.ensure_future(pump())
    watching = asyncio.ensure_future(watch())
    try:
        await asyncio.wait((pumping, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, watching):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        close = getattr(reply.chunks, "aclose", None)
        if close is not None:
            await close()
    if pumping.done() and not pumping.cancelled() and pumping.exception() is not None:
        raise pumping.exception()  # type: ignore[misc]


async def _lifespan(lifespan: Lifespan | None, receive: Receive, send: Send) -> None:
    manager = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                if lifespan is not None:
                    manager = lifespan()
                    await manager.__aenter__()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if manager is not None:
                await manager.__aexit__(None, None, None)
            await send({"type": "lifespan.shutdown.complete"})
            return


def asgi_app(
    dispatcher: Dispatcher, *, lifespan: Lifespan | None = None, max_body: int | None = None
) -> ASGIApp:
    """An ASGI application serving ``dispatcher``'s endpoints."""
    limit = dispatcher.max_body if max_body is None else max_body

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(lifespan, receive, send)
            return
        if kind != "http":
            return  # (websockets: none of the built-in endpoints speaks it)
        try:
            body = await _read_body(receive, limit)
        except _TooLarge:
            detail = f"the request body is larger than {limit} bytes"
            await _send_reply(send, problem_reply(413, "payload_too_large", detail), False)
            return
        if body is None:
            return
        gone = [False]
        call = _call_of(scope, body, gone)
        result: Any = dispatcher.dispatch(call)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, StreamReply):
            await _send_stream(send, receive, result, gone)
        else:
            await _send_reply(send, result, scope["method"] == "HEAD")

    return app
