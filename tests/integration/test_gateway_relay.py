"""Relaying answers as they are parsed, against scripted upstreams on loopback: in pieces with
backpressure, re-framing, failures mid-body, clients that leave, a stale keep-alive connection,
a retried status."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from tests.integration.gateway_fixtures import (
    Handler,
    ScriptedUpstream,
    config_for,
    dechunk,
    raw_exchange,
    read_request,
    running_gateway,
)


def _route(**extra: object) -> dict[str, object]:
    return {"name": "api", "path_prefix": "/api", "upstream": "backends", **extra}


async def test_a_large_chunked_download_is_relayed_in_pieces_with_backpressure() -> None:
    """64 MB in 64 KB chunks reach a client that stops reading for a while: the gateway stops
    reading the upstream meanwhile (its send buffer fills), and every byte arrives intact."""
    chunk = bytes(range(256)) * 256  # 64 KB
    total = 1024  # 64 MB: more than the kernel buffers on the way hold

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(total):
            writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url], routes=[_route()])) as gw,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port, limit=2**16)
        writer.write(b"GET /api/big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        # The client reads nothing more for a while: the gateway holds little of the body
        # (its send buffer to the client stays small), the upstream's writes back up.
        await asyncio.sleep(1.0)
        (conn,) = gw.server.connections  # type: ignore[union-attr]
        assert conn.transport is not None
        held = conn.transport.get_write_buffer_size()
        backed_up = up.writers[0].transport.get_write_buffer_size()
        rest = await asyncio.wait_for(reader.read(), 20)
        writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    assert held < 4 * 2**20, f"the gateway buffered {held} bytes for a client that did not read"
    assert backed_up > 0, "the gateway kept reading while its client did not"
    body = dechunk(rest)
    assert len(body) == total * len(chunk)
    assert hashlib.sha256(body).digest() == hashlib.sha256(chunk * total).digest()


async def test_an_http10_client_gets_a_close_delimited_body_from_a_chunked_upstream() -> None:
    """HTTP/1.0 has no chunked encoding: the body is sent plain and the connection closed."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n"
            b"0\r\n\r\n"
        )
        await writer.drain()
        await reader.read()

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url], routes=[_route()])) as gw,
    ):
        data = await raw_exchange(gw.server.port, b"GET /api/x HTTP/1.0\r\nHost: t\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"hello world"


async def test_an_upstream_dying_mid_body_cuts_the_client_connection() -> None:
    """The status line is out already: the client sees a truncated body, never a whole one."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.transport.abort()

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url], routes=[_route()])) as gw,
    ):
        data = await raw_exchange(gw.server.port, b"GET /api/x HTTP/1.1\r\nHost: t\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 1000" in head.lower()
    assert len(body) < 1000


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /api/slow HTTP/1.1\r\nHost: t\r\n\r\n", id="express-lane"),
        pytest.param(
            b"POST /api/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}", id="pipeline"
        ),
    ],
)
async def test_a_client_that_leaves_abandons_its_upstream_exchange(request_bytes: bytes) -> None:
    """The upstream's connection is closed as soon as the client goes, and the endpoint's
    in-flight count is given back (nothing is judged), on either lane."""
    got_request = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"POST"):
            await reader.readexactly(2)
        got_request.set()
        await reader.read()  # never answers; returns when the gateway closes the connection
        up.closed.set()

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url], routes=[_route()])) as gw,
    ):
        _, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
        writer.write(request_bytes)
        await asyncio.wait_for(got_request.wait(), 5)
        endpoint = gw.runtime.snapshot.pools["backends"].endpoints[0]  # type: ignore[union-attr]
        assert endpoint.in_flight == 1
        writer.close()
        await asyncio.wait_for(up.closed.wait(), 5)
        await asyncio.sleep(0.05)
        assert endpoint.in_flight == 0
        assert endpoint.failures == 0
        assert endpoint.breaker.snapshot(0.0)["window_requests"] == 0


async def test_an_idle_connection_the_upstream_dropped_is_retried_on_a_fresh_one() -> None:
    """The upstream closes a kept-alive connection when the next request arrives on it: the
    request goes again on a new connection, and the client never notices."""
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await reader.readuntil(b"\r\n\r\n")
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next request on this connection: dropped

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url], routes=[_route()])) as gw,
    ):
        data = await raw_exchange(
            gw.server.port,
            b"GET /api/1 HTTP/1.1\r\nHost: t\r\n\r\n",
            read_until_close=False,
        )
        again = await raw_exchange(
            gw.server.port,
            b"GET /api/2 HTTP/1.1\r\nHost: t\r\n\r\n",
            read_until_close=False,
        )
        pool = gw.runtime.snapshot.pools["backends"]  # type: ignore[union-attr]
        endpoint = pool.endpoints[0]
        budget = pool.retry_budget.snapshot()
    for answer in (data, again):
        assert answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(b"ok")
    assert served == 2
    assert len(up.writers) == 2
    assert endpoint.failures == 0
    assert endpoint.in_flight == 0
    # Two requests, each counted once in the retry budget (the fresh connection is no retry).
    assert (budget["window_requests"], budget["window_retries"]) == (2, 0)


async def test_a_retryable_status_is_retried_on_another_endpoint() -> None:
    """503 from the first endpoint: the same request goes to the second, which answers."""
    seen: list[str] = []

    def answering(name: str, status: bytes) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                seen.append(name)
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Length: 4\r\n\r\n" + name.encode()
                )
                await writer.drain()

        return handler

    async with (
        ScriptedUpstream(answering("bad1", b"503 Service Unavailable")) as bad,
        ScriptedUpstream(answering("good", b"200 OK")) as good,
    ):
        data_config = config_for([bad.url, good.url], routes=[_route(retry={"attempts": 2})])
        async with running_gateway(data_config) as gw:
            data = await raw_exchange(
                gw.server.port, b"GET /api/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
    assert data.startswith(b"HTTP/1.1 200")
    assert data.endswith(b"good")
    assert seen == ["bad1", "good"]


async def test_a_retried_request_names_each_endpoint_as_its_host_once() -> None:
    """Without preserve_host every attempt carries its own endpoint's Host (one line), also
    on the pipeline's retries (a PUT with a body is not an express request)."""
    heads: list[bytes] = []

    def answering(status: bytes) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(5)
                heads.append(head)
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()

        return handler

    async with (
        ScriptedUpstream(answering(b"503 Service Unavailable")) as bad,
        ScriptedUpstream(answering(b"200 OK")) as good,
    ):
        route = _route(retry={"attempts": 2}, preserve_host=False)
        async with running_gateway(config_for([bad.url, good.url], routes=[route])) as gw:
            data = await raw_exchange(
                gw.server.port,
                b"PUT /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n"
                b"\r\nhello",
            )
    assert data.startswith(b"HTTP/1.1 200")
    assert len(heads) == 2
    for head, up in zip(heads, (bad, good), strict=True):
        hosts = [line for line in head.lower().split(b"\r\n") if line.startswith(b"host:")]
        assert hosts == [f"host: 127.0.0.1:{up.port}".encode()]


async def test_a_small_body_is_read_whole_and_its_answer_relayed_on_callbacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A POST whose body arrives after its head, in pieces, starts once the body is whole and
    its answer is relayed as it is parsed (no task, no response object); the body reaches the
    upstream intact, also when a stale keep-alive connection makes it go again on a fresh one."""
    from gatekeeper.gateway.flow.exchange import Exchange

    started: list[str] = []
    original = Exchange.on_head

    def spy(self: Exchange, *args: Any) -> bool:
        assert self.task is None
        started.append(self.request.method)
        return original(self, *args)

    monkeypatch.setattr(Exchange, "on_head", spy)
    bodies: list[bytes] = []
    heads = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal heads
        _, body = await read_request(reader)
        heads += 1
        bodies.append(body)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next request on this connection: dropped

    payload = b'{"order": "' + b"x" * 40_000 + b'"}'
    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url], routes=[_route()])) as gw,
    ):
        for turn in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
            writer.write(
                b"POST /api/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (len(payload), payload[:1000])
            )
            await writer.drain()
            await asyncio.sleep(0.1)
            assert heads == turn  # nothing was forwarded before the body was whole
            writer.write(payload[1000:])
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 201")
            assert await reader.readexactly(2) == b"ok"
            writer.close()
    assert bodies == [payload, payload]  # (the second went on a fresh connection)
    assert len(up.writers) == 2
    assert started == ["POST", "POST"]
