"""Serve an ASGI application (the built-in FastAPI app) on the gateway's own listener.

Requests whose path is not a proxied route are handed to the ASGI app with a full HTTP scope.
``receive`` streams the request body from the connection and then reports ``http.disconnect``
when the client goes away; ``send`` writes the response as it comes, so streaming responses
(Server-Sent Events) reach the client message by message. The app's lifespan runs once, at
server start and stop (:class:`Lifespan`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from gatekeeper.gateway.http.writer import Framing

if TYPE_CHECKING:
    from gatekeeper.gateway.http.messages import ProxyRequest
    from gatekeeper.gateway.http.protocol import HttpProtocol

__all__ = ["ASGIApp", "Lifespan", "serve_asgi"]

logger = logging.getLogger("gatekeeper.gateway")

Message = MutableMapping[str, Any]
# Fields the gateway writes itself: framing, and the request id (in ``extra``).
_OWN = frozenset({b"connection", b"transfer-encoding", b"x-request-id"})
ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]


async def serve_asgi(
    app: ASGIApp,
    request: ProxyRequest,
    conn: HttpProtocol,
    *,
    state: dict[str, Any] | None = None,
    server: tuple[str, int] | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> int:
    """Run ``app`` for one request, writing its response to ``conn``; the status sent (499:
    the client went away before an answer started)."""
    target = request.target
    query = target.find(b"?")
    raw_path = target if query == -1 else target[:query]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.version,
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": raw_path,
        "query_string": b"" if query == -1 else target[query + 1 :],
        "root_path": "",
        "headers": request.headers,
        "client": (request.client_ip, conn.peer_port),
        "server": server,
        "state": dict(state) if state else {},
    }
    body = request.body
    body_done = False
    response_done = False
    mode = Framing.NONE
    sent_status = 499

    async def receive() -> Message:
        nonlocal body_done
        if not body_done:
            try:
                chunk = await body.read()
            except ConnectionError:
                return {"type": "http.disconnect"}
            if not chunk:
                body_done = True
            more = not body.at_eof
            body_done = not more
            return {"type": "http.request", "body": chunk, "more_body": more}
        if conn.disconnected is None or conn.disconnected.cancelled():
            conn.disconnected = asyncio.get_running_loop().create_future()
        if not conn.closed and not response_done:
            # Shielded: Starlette's is_disconnected() cancels this wait at once; unshielded,
            # that would cancel the shared future and cut the streaming that follows.
            await asyncio.shield(conn.disconnected)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal mode, response_done, sent_status
        kind = message["type"]
        if kind == "http.response.start":
            if conn.response_started:
                raise RuntimeError("http.response.start sent twice")
            status = sent_status = int(message["status"])
            headers: list[tuple[bytes, bytes]] = []
            length: int | None = None
            for name, value in message.get("headers", ()):
                name = bytes(name).lower()
                if name == b"content-length":
                    length = int(value)
                elif name not in _OWN:
                    headers.append((name, bytes(value)))
            mode = conn.start_response(request, status, headers, extra, length)
        elif kind == "http.response.body":
            if not conn.response_started or response_done:
                raise RuntimeError("http.response.body out of order")
            if conn.closed:
                raise ConnectionError("client disconnected")
            conn.write_body(bytes(message.get("body", b"")), mode)
            if not message.get("more_body", False):
                response_done = True
                conn.end_body(mode)
            await conn.drain()

    await app(scope, receive, send)
    if not response_done:
        if not conn.response_started:
            conn.send_problem(500, "internal_error", "the application gave no answer", request)
            sent_status = 500
        else:
            conn.keep_alive = False
    if not body.at_eof:
        conn.keep_alive = False
    return sent_status


class Lifespan:
    """Runs an ASGI app's lifespan protocol once: :meth:`startup` then :meth:`shutdown`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._supported = True

    async def startup(self) -> None:
        """Start the app; raises ``RuntimeError`` if its startup fails."""
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        waiter = asyncio.ensure_future(self._started.wait())
        await asyncio.wait((waiter, self._task), return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._error is not None:
            raise RuntimeError(f"application startup failed: {self._error}")

    async def shutdown(self) -> None:
        """Stop the app (waits for its shutdown handlers)."""
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait((self._task,), timeout=30)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = self.state
        try:
            await self.app(scope, self._inbox.get, self._send)
        except Exception as exc:
            if not self._started.is_set():
                self._error = repr(exc)
                logger.exception("lifespan failed")
        finally:
            self._started.set()
            self._stopped.set()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._error = str(message.get("message", "startup failed"))
            self._started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self._stopped.set()
