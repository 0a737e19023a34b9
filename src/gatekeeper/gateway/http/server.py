"""The listener: a raw asyncio server (uvloop when available) running :class:`HttpProtocol`.

Shutdown, step by step:

1. stop accepting new connections;
2. ask every connection to close once its current response is written (idle ones close now);
3. wait up to ``shutdown_grace`` seconds for in-flight requests, then cut what is left;
4. stop the gateway state (health checks, idle upstream connections) and the lifespan.

The server knows nothing of routes: it hands every parsed request to its :class:`Handler` (the
gateway's flow), which answers through the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

from gatekeeper.gateway.http.protocol import Handler, HttpProtocol

__all__ = ["Handler", "Server", "install_uvloop"]

logger = logging.getLogger("gatekeeper.gateway")


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when it is installed; returns whether it is."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class Server:
    """Serves a :class:`Handler` on ``host:port``."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        backlog: int = 2048,
        keepalive_timeout: float = 75.0,
        shutdown_grace: float = 30.0,
        sock: socket.socket | None = None,
        tls: ssl.SSLContext | None = None,
        max_header_bytes: int = 64 * 1024,
        header_timeout: float = 30.0,
    ) -> None:
        self.handler = handler
        self.max_header_bytes = max_header_bytes  # request line and header fields together
        self.header_timeout = header_timeout  # seconds a request head may take (0: no bound)
        self.now = 0.0  # a coarse loop clock, advanced by the sweeper (see _sweep)
        self.tls = tls  # HTTPS on the listener (see gateway/http/tls.py)
        self.scheme = "https" if tls is not None else "http"
        self.host = host
        self.port = port
        self.backlog = backlog
        self.keepalive_timeout = keepalive_timeout
        self.shutdown_grace = shutdown_grace
        self.connections: set[HttpProtocol] = set()
        self.closing = False
        self._sock = sock
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Bind and start accepting (the port is known afterwards, also when 0 was asked)."""
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(
                lambda: HttpProtocol(self), sock=self._sock, backlog=self.backlog, ssl=self.tls
            )
        else:
            self._server = await loop.create_server(
                lambda: HttpProtocol(self),
                self.host,
                self.port,
                backlog=self.backlog,
                reuse_address=True,
                ssl=self.tls,
            )
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.handler.server_address = (self.host, self.port)
        self.now = asyncio.get_running_loop().time()
        if self.keepalive_timeout > 0 or self.header_timeout > 0:
            self._sweep()

    def _sweep(self) -> None:
        """Close connections idle past the keep-alive timeout and heads slower than the
        header timeout (one periodic timer for every connection, none per request)."""
        loop = asyncio.get_running_loop()
        self.now = now = loop.time()
        idle = self.keepalive_timeout
        heads = self.header_timeout
        for conn in list(self.connections):
            if idle > 0:
                conn.close_if_idle_since(now - idle)
            if heads > 0:
                conn.close_if_head_since(now - heads)
        interval = min(1.0, *(t / 4 for t in (idle, heads) if t > 0))
        self._sweeper = loop.call_later(interval, self._sweep)

    @property
    def in_flight(self) -> int:
        """Connections with a request being answered (open WebSocket tunnels included)."""
        return sum(1 for conn in self.connections if conn.busy)

    @property
    def tunnels(self) -> int:
        """Connections switched to another protocol (WebSocket tunnels) and still open."""
        return sum(1 for conn in self.connections if conn.tunnel is not None)

    async def stop(self) -> None:
        """Graceful shutdown (see the module docstring)."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_when_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_grace
        while self.connections and loop.time() < deadline:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
