"""Helpers for the gateway's integration tests: real backends and a real gateway on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.gateway.config import parse_config
from gatekeeper.gateway.mock_backend import MockBackend, run_backends
from gatekeeper.settings import Settings

ADMIN_TOKEN = "test-admin-token-0123456789"


def config_for(backends: list[str], **overrides: Any) -> dict[str, Any]:
    """A configuration dict: route ``/api`` -> pool ``backends`` (no limits unless given)."""
    data: dict[str, Any] = {
        "listener": {"host": "127.0.0.1", "port": 8080, "shutdown_grace": 2},
        "policies": {},
        "upstreams": {"backends": {"endpoints": [{"url": url} for url in backends]}},
        "routes": [{"name": "api", "path_prefix": "/api", "upstream": "backends"}],
    }
    data.update(overrides)
    return data


@asynccontextmanager
async def running_gateway(
    data: dict[str, Any], *, redis_url: str = "", config_path: str | None = None
) -> AsyncIterator[Gateway]:
    """A gateway serving ``data`` (a config dict) on a free port, alone (no components)."""
    settings = Settings(redis_url=redis_url, admin_token=SecretStr(ADMIN_TOKEN))
    gateway = Gateway(settings, parse_config(data), port=0, components=(), config_path=config_path)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


@asynccontextmanager
async def backends(count: int = 3) -> AsyncIterator[list[MockBackend]]:
    """``count`` mock backends on free ports."""
    started = await run_backends(count)
    try:
        yield started
    finally:
        for backend in started:
            await backend.stop()


async def raw_exchange(port: int, request: bytes, *, read_until_close: bool = True) -> bytes:
    """Send raw bytes to ``port`` and read what comes back (until close, bounded to 5 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        if read_until_close:
            return await asyncio.wait_for(reader.read(), 5)
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


class RawUpstream:
    """A one-off upstream answering every request with fixed raw bytes (then keep-alive)."""

    def __init__(self, response: bytes, *, close: bool = False) -> None:
        self.response = response
        self.close = close
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> RawUpstream:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    self.requests.append(head)
                    writer.write(self.response)
                    await writer.drain()
                    if self.close:
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedUpstream:
    """An upstream whose every connection runs ``handler``; it remembers its writers."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.writers: list[asyncio.StreamWriter] = []
        self.closed = asyncio.Event()  # a connection ended from the gateway's side
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> ScriptedUpstream:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """A scripted upstream's next request: its head, and its body when it has a
    Content-Length (chunked bodies are left unread)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lowered = head.lower()
    if b"content-length: " not in lowered:
        return head, b""
    length = int(lowered.split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await reader.readexactly(length)


def dechunk(data: bytes) -> bytes:
    """The payload of a chunked body (``data`` starts at its first chunk)."""
    out, at = bytearray(), 0
    while True:
        end = data.index(b"\r\n", at)
        size = int(data[at:end], 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        at = end + 4 + size
