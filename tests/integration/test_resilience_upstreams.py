"""Real upstreams for the resilience tests, and the health probe against them.

The other ``test_resilience_*`` modules import from here: :class:`Upstream` (an in-process
HTTP/1.1 server whose status, delay and health can be changed while it runs),
:class:`BackendProcess` (the gateway's mock backend as a separate process, to be killed and
restarted), :class:`Client` (a minimal keep-alive HTTP/1.1 client, fast enough for thousands of
requests) and :func:`running_gateway` (the real gateway, serving a given configuration).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gatekeeper.gateway.upstream.health import probe
from tests.servers import free_port, wait_for_port

ADMIN = "resilience-admin-token"


class Upstream:
    """An HTTP/1.1 server on a free loopback port that answers ``{"backend": name}``.

    ``status`` and ``delay`` apply to every request except ``/health``, which answers
    ``health_status``. While ``gate`` is an unset event, requests wait for it (a test holds a
    request in flight for exactly as long as it needs). ``paths`` records request targets in
    arrival order.
    """

    def __init__(self, name: str, *, status: int = 200, delay: float = 0.0) -> None:
        self.name = name
        self.status = status
        self.delay = delay
        self.health_status = 200
        self.requests = 0
        self.paths: list[str] = []
        self.gate: asyncio.Event | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every open connection (as a dead process would)."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                if target == "/health":
                    status = self.health_status
                else:
                    self.requests += 1
                    self.paths.append(target)
                    status = self.status
                    if self.gate is not None:
                        await self.gate.wait()
                    if self.delay:
                        await asyncio.sleep(self.delay)
                body = json.dumps({"backend": self.name, "path": target}).encode()
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\nx-backend: %b\r\n"
                    b"content-length: %d\r\n\r\n%b" % (status, self.name.encode(), len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


async def start_upstreams(*names: str) -> list[Upstream]:
    """Start one :class:`Upstream` per name."""
    upstreams = [Upstream(name) for name in names]
    for upstream in upstreams:
        await upstream.start()
    return upstreams


class BackendProcess:
    """``python -m gatekeeper.gateway.mock_backend PORT NAME`` as a child process."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper.gateway.mock_backend", str(self.port), self.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class Client:
    """A keep-alive HTTP/1.1 client for one ``host:port`` (content-length and chunked)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; (status, lower-case headers, body)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"content-length: {len(body)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        response_headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                response_headers[name.strip().lower()] = value.strip()
        data = b""
        if "content-length" in response_headers:
            data = await self._reader.readexactly(int(response_headers["content-length"]))
        elif response_headers.get("transfer-encoding") == "chunked":
            while size := int((await self._reader.readline()).strip(), 16):
                data += await self._reader.readexactly(size)
                await self._reader.readline()
            await self._reader.readline()
        if response_headers.get("connection") == "close":
            await self.close()
        return status, response_headers, data

    async def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return await self.request("GET", path, headers)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


@dataclass
class Gateway:
    """A running gateway: its port, live runtime and pools."""

    port: int
    runtime: Any
    clients: list[Client] = field(default_factory=list)

    def pool(self, name: str = "backends") -> Any:
        return self.runtime.snapshot.pools[name]

    def client(self) -> Client:
        client = Client(self.port)
        self.clients.append(client)
        return client

    async def spread(
        self, n: int, path: str = "/api/x", concurrency: int = 4, **headers: str
    ) -> Counter[str]:
        """Send ``n`` GETs over ``concurrency`` connections; count 2xx/3xx answers by backend
        and the others by status (``"503"``)."""
        counts: Counter[str] = Counter()

        async def worker(count: int) -> None:
            client = self.client()
            for _ in range(count):
                status, response_headers, _ = await client.get(path, headers)
                backend = response_headers.get("x-backend")
                counts[backend if backend and status < 400 else str(status)] += 1

        shares = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
        await asyncio.gather(*(worker(c) for c in shares))
        return counts


def gateway_config(
    urls: list[str],
    *,
    strategy: str = "round_robin",
    upstream: dict[str, Any] | None = None,
    route: dict[str, Any] | None = None,
    extra_routes: list[dict[str, Any]] | None = None,
    weights: list[int] | None = None,
) -> dict[str, Any]:
    """A gateway configuration: ``/api`` -> pool ``backends`` over ``urls``, no limits."""
    weights = weights or [1] * len(urls)
    pool: dict[str, Any] = {
        "strategy": strategy,
        "endpoints": [{"url": u, "weight": w} for u, w in zip(urls, weights, strict=True)],
    }
    pool.update(upstream or {})
    main: dict[str, Any] = {"name": "api", "path_prefix": "/api", "upstream": "backends"}
    main.update(route or {})
    return {
        "listener": {"host": "127.0.0.1", "port": free_port(), "shutdown_grace": 1},
        "upstreams": {"backends": pool},
        "routes": [*(extra_routes or []), main],
        "log_access": False,
    }


@contextlib.asynccontextmanager
async def running_gateway(config: dict[str, Any], tmp_path: Path) -> AsyncIterator[Gateway]:
    """Serve ``config`` with the real gateway until the block ends."""
    from gatekeeper.app import Runtime, serve
    from gatekeeper.gateway.config import parse_config
    from gatekeeper.settings import Settings

    parsed = parse_config(config, "<resilience test>")
    settings = Settings(
        redis_url="",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}",
        admin_token=SecretStr(ADMIN),
        log_level="warning",
    )
    stop = asyncio.Event()
    ready: asyncio.Future[Runtime] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(settings, parsed, stop=stop, on_ready=lambda runtime: ready.set_result(runtime))
    )
    gateway: Gateway | None = None
    try:
        runtime = await asyncio.wait_for(asyncio.shield(ready), 15)
        gateway = Gateway(parsed.listener.port, runtime)
        yield gateway
    finally:
        if gateway is not None:
            for client in gateway.clients:
                await client.close()
        stop.set()
        await asyncio.wait_for(task, 15)


async def eventually(condition: Any, within: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition()`` (sync or async) until true; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"{what} did not happen within {within}s")


# -- the health probe against real servers ---------------------------------------------------


async def test_probe_passes_on_2xx_and_fails_on_5xx() -> None:
    """The probe reads the status line: 200 passes, 503 fails and says so."""
    (upstream,) = await start_upstreams("a")
    try:
        assert await probe("127.0.0.1", upstream.port, "/health", 1.0) == (True, "")
        upstream.health_status = 503
        assert await probe("127.0.0.1", upstream.port, "/health", 1.0) == (False, "status 503")
        upstream.health_status = 302
        assert (await probe("127.0.0.1", upstream.port, "/health", 1.0))[0]
    finally:
        await upstream.stop()


async def test_probe_fails_on_refused_connection() -> None:
    """Nobody listening is a failed check, not an exception."""
    passed, reason = await probe("127.0.0.1", free_port(), "/health", 1.0)
    assert not passed
    assert reason.startswith("connection failed")


async def test_probe_times_out_on_a_silent_server() -> None:
    """A server that accepts but never answers fails the check after the timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the probe gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await probe("127.0.0.1", port, "/health", 0.1) == (False, "no answer within 0.1s")
    finally:
        server.close()
        await server.wait_closed()


async def test_probe_rejects_a_non_http_answer() -> None:
    """Garbage instead of a status line fails the check."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await probe("127.0.0.1", port, "/health", 1.0) == (
            False,
            "not an HTTP/1.x response",
        )
    finally:
        server.close()
        await server.wait_closed()


async def test_probe_sends_the_configured_path_and_host() -> None:
    """The request line carries the configured path; the Host header the configured name."""
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await probe("127.0.0.1", port, "/livez", 1.0, host_header="api.internal"))[0]
    finally:
        server.close()
        await server.wait_closed()
    assert seen[0].startswith(b"GET /livez HTTP/1.1\r\n")
    assert b"\r\nHost: api.internal\r\n" in seen[0]


async def test_pool_health_checks_run_between_start_and_stop() -> None:
    """pool.start() checks in the background: a failing /health takes the endpoint out, a
    passing one brings it back; pool.stop() ends the checking task."""
    from gatekeeper.gateway.upstream.balancing import RequestContext
    from gatekeeper.gateway.upstream.endpoint import Endpoint
    from gatekeeper.gateway.upstream.health import HealthCheckConfig
    from gatekeeper.gateway.upstream.pool import UpstreamPool

    a, b = await start_upstreams("a", "b")
    config = HealthCheckConfig(
        interval=0.02, timeout=0.5, healthy_threshold=1, unhealthy_threshold=1, jitter=0
    )
    pool = UpstreamPool(
        "direct", [Endpoint("127.0.0.1", a.port), Endpoint("127.0.0.1", b.port)], health=config
    )
    ctx = RequestContext("127.0.0.1")
    try:
        await pool.start()
        a.health_status = 503
        await eventually(lambda: not pool.endpoints[0].healthy, what="a marked down")
        assert {pool.pick(ctx) for _ in range(10)} == {pool.endpoints[1]}
        a.health_status = 200
        await eventually(lambda: pool.endpoints[0].healthy, what="a back up")
        assert pool.health is not None
        assert pool.health.running
        await pool.stop()
        assert not pool.health.running
    finally:
        await pool.stop()
        await a.stop()
        await b.stop()
