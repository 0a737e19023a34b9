"""Native handlers: built-in endpoints the gateway answers without the ASGI bridge and FastAPI.

A few built-in endpoints are hot (the waiting room's enqueue and status polls): through the
bridge, Starlette's routing and the middleware they cost ~5x a proxied request. A component may
register a coroutine for an exact ``(method, path)`` in the table published as
``context.extras["native_handlers"]``; the gateway consults it (one dict lookup) only for
requests no proxied route matched, before handing them to the ASGI app. The FastAPI routes stay
registered, so OpenAPI still documents them; the native handler just answers first.

A handler takes the parsed :class:`ProxyRequest` and returns ``(status, headers, body)``. What
the app's middleware adds to every answer is added here too: the request id (the client's
``X-Request-ID`` if sane, else a new one) echoed back and bound to the log lines.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from structlog.contextvars import bind_contextvars, reset_contextvars

from gatekeeper.gateway.http.messages import Headers, ProxyRequest

if TYPE_CHECKING:
    from gatekeeper.gateway.http.protocol import HttpProtocol

__all__ = ["NativeHandler", "NativeReply", "NativeTable", "native_table", "serve_native"]

NativeReply = tuple[int, Headers, bytes]
NativeHandler = Callable[[ProxyRequest], Awaitable[NativeReply]]
NativeTable = dict[tuple[str, str], NativeHandler]

_REQUEST_ID = b"x-request-id"


def native_table(extras: MutableMapping[str, Any]) -> NativeTable:
    """The process's table of native handlers in ``extras`` (created on first use)."""
    table: NativeTable = extras.setdefault("native_handlers", {})
    return table


def _request_id_var() -> ContextVar[Any]:
    """The context variable behind structlog's bound ``request_id`` (read off the token that
    binding returns), so that a request can set and reset it directly: structlog's
    bind/reset pair costs about 1 us a request, the variable's own set/reset a tenth."""
    tokens = bind_contextvars(request_id=None)
    reset_contextvars(**tokens)
    return tokens["request_id"].var


_RID = _request_id_var()


async def serve_native(
    handler: NativeHandler,
    request: ProxyRequest,
    conn: HttpProtocol,
    rid: str,
    extra: Headers | None = None,
) -> int:
    """Run ``handler`` for ``request`` (whose id is ``rid``) and write its answer, as the ASGI
    app would have; the status."""
    token = _RID.set(rid)  # log lines of the handler carry the request id
    try:
        status, headers, body = await handler(request)
    finally:
        _RID.reset(token)
    headers = [h for h in headers if h[0] != _REQUEST_ID]
    if extra is None:
        headers.append((_REQUEST_ID, rid.encode("latin-1")))
    conn.send_bytes(status, headers, body, request, extra)
    if not request.body.at_eof:
        # The handler did not read the body: the connection cannot be reused (as the bridge).
        conn.keep_alive = False
    return status
