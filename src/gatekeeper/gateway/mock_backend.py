"""A small HTTP/1.1 backend for the demo, the tests and the benchmark.

Every answer is JSON naming the backend. Paths (also under any prefix: ``/api/bytes/10``):

``/health``            ``{"status": "healthy", "backend": name}``
``/bytes/<n>``         ``n`` bytes of ``x`` streamed in 64 KiB writes (``?chunked=1``: chunked)
``/echo``              the request body streamed back (chunked)
``/status/<code>``     that status with the usual JSON
``/delay/<ms>``        answers after ``ms`` milliseconds
anything else          ``{"backend", "port", "method", "path", "headers", "body_bytes"}``

Request bodies are counted, never kept (the ``/echo`` path streams them back), so a 100 MB upload
costs no memory here either.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, cast

import httptools

from gatekeeper.gateway.http.protocol import status_line

__all__ = ["MockBackend", "run_backends"]

_CHUNK = b"x" * 65536


class _Conn(asyncio.Protocol):
    def __init__(self, backend: MockBackend) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_bytes = 0
        self.echo = False
        self.paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.queue: asyncio.Queue[bytes | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.backend.connections += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    async def drain(self) -> None:
        if self.paused:
            self.drain_waiter = asyncio.get_running_loop().create_future()
            await self.drain_waiter

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        path = self.url.split(b"?", 1)[0]
        self.echo = path.endswith(b"/echo")
        if self.echo:
            self.queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self._echo())

    def on_body(self, data: bytes) -> None:
        self.body_bytes += len(data)
        if self.echo and self.queue is not None:
            self.queue.put_nowait(data)
            if self.queue.qsize() > 16 and self.transport is not None:
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.backend.requests += 1
        if self.echo and self.queue is not None:
            self.queue.put_nowait(None)
            return
        asyncio.get_running_loop().create_task(self._answer(self.parser.get_method(), self.url))

    async def _echo(self) -> None:
        assert self.queue is not None
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
            b"x-backend: %b\r\ntransfer-encoding: chunked\r\n\r\n" % self.backend.name.encode()
        )
        while (chunk := await self.queue.get()) is not None:
            self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            if self.queue.qsize() < 4:
                self.transport.resume_reading()
            await self.drain()
        self.transport.write(b"0\r\n\r\n")

    async def _answer(self, method: bytes, url: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        full_path, _, query = url.partition(b"?")
        name = self.backend.name.encode()
        path = full_path
        for marker in (b"/bytes/", b"/delay/", b"/status/", b"/health"):
            at = full_path.rfind(marker)
            if at > 0:
                path = full_path[at:]
                break
        status = 200
        if path.startswith(b"/bytes/"):
            size = int(path[7:])
            chunked = b"chunked=1" in query
            framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % size
            transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                b"x-backend: %b\r\n%b\r\n\r\n" % (name, framing)
            )
            if method == b"HEAD":
                return
            left = size
            while left > 0:
                part = _CHUNK[: min(left, len(_CHUNK))]
                left -= len(part)
                transport.write(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part)
                await self.drain()
            if chunked:
                transport.write(b"0\r\n\r\n")
            return
        if path.startswith(b"/delay/"):
            await asyncio.sleep(int(path[7:]) / 1000)
        if path.startswith(b"/status/"):
            status = int(path[8:])
        payload: dict[str, Any]
        if path == b"/health":
            payload = {"status": "healthy", "backend": self.backend.name}
        else:
            payload = {
                "backend": self.backend.name,
                # Seed 001's backends name themselves and greet (its load-balance script reads
                # these two fields).
                "hostname": self.backend.hostname,
                "message": f"Hello from {self.backend.name}",
                "port": self.backend.port,
                "method": method.decode(),
                "path": url.decode("latin-1"),
                "headers": {k.decode(): v.decode("latin-1") for k, v in self.headers}
                if self.backend.echo_headers
                else {},
                "body_bytes": self.body_bytes,
            }
        body = json.dumps(payload).encode()
        head = b"%bcontent-type: application/json\r\nx-backend: %b\r\n" % (
            status_line(status),
            name,
        )
        if status in (204, 304):
            transport.write(head + b"\r\n")
            return
        head += b"content-length: %d\r\n\r\n" % len(body)
        transport.write(head if method == b"HEAD" else head + body)


class MockBackend:
    """One mock backend server on ``host:port`` (``port=0`` picks a free one)."""

    def __init__(
        self, name: str, host: str = "127.0.0.1", port: int = 0, *, echo_headers: bool = True
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.echo_headers = echo_headers
        # As a replica of seed 001 names itself: the machine's name, and which backend.
        self.hostname = f"{socket.gethostname()}-{name}"
        self.requests = 0
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


async def run_backends(count: int, host: str = "127.0.0.1") -> list[MockBackend]:
    """Start ``count`` backends named ``backend-1`` ... on free ports."""
    backends = [MockBackend(f"backend-{i + 1}", host) for i in range(count)]
    for backend in backends:
        await backend.start()
    return backends


def main() -> None:  # pragma: no cover - used by the benchmark as a separate process
    """``python -m gatekeeper.gateway.mock_backend PORT [NAME [HOST]]`` (HOST: 127.0.0.1)."""
    import sys

    from gatekeeper.gateway.http.server import install_uvloop

    install_uvloop()

    async def serve() -> None:
        backend = MockBackend(
            sys.argv[2] if len(sys.argv) > 2 else "backend",
            sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1",  # compose's backends: 0.0.0.0
            port=int(sys.argv[1]),
        )
        await backend.start()
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":  # pragma: no cover
    main()
