"""Bounds on what a client may make the gateway hold: the size of the request head (414 for
the target, 431 for the fields), the time it takes to arrive (408: a slowloris client
trickling its head cannot hold a connection for ever), and a route's largest body (413)."""

from __future__ import annotations

import asyncio
import json
import time

from tests.integration.gateway_fixtures import (
    ScriptedUpstream,
    config_for,
    raw_exchange,
    read_request,
    running_gateway,
)


async def _ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


def _error(raw: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.endswith(b"\r\nconnection: close")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def test_heads_larger_than_allowed_are_refused_with_414_or_431() -> None:
    listener = {"host": "127.0.0.1", "port": 8080, "max_header_bytes": 4096}
    async with (
        ScriptedUpstream(_ok) as up,
        running_gateway(config_for([up.url], listener=listener)) as gw,
    ):
        port = gw.server.port
        fits = b"x" * 3000
        raw = await raw_exchange(
            port, b"GET /api/a HTTP/1.1\r\nHost: t\r\nX-Big: %b\r\nConnection: close\r\n\r\n" % fits
        )
        assert raw.startswith(b"HTTP/1.1 200 OK"), raw
        big = b"x" * 5000
        status, body = _error(
            await raw_exchange(port, b"GET /api/a HTTP/1.1\r\nHost: t\r\nX-Big: %b\r\n\r\n" % big)
        )
        assert status == 431
        assert "header fields" in body["detail"]
        many = b"".join(b"X-Field-%d: %b\r\n" % (i, b"v" * 100) for i in range(60))
        status, _ = _error(
            await raw_exchange(port, b"GET /api/a HTTP/1.1\r\nHost: t\r\n%b\r\n" % many)
        )
        assert status == 431
        status, body = _error(await raw_exchange(port, b"GET /api/%b HTTP/1.1\r\n\r\n" % big))
        assert status == 414
        assert "target" in body["detail"]


async def test_a_head_that_trickles_in_too_slowly_gets_408() -> None:
    """A client that starts a request and never finishes its head is answered 408 and cut
    after ``header_timeout`` (checked by the sweeper, so within about a second more); a quiet
    kept-alive connection is governed by the keep-alive timeout instead."""
    listener = {"host": "127.0.0.1", "port": 8080, "header_timeout": 0.5}
    async with (
        ScriptedUpstream(_ok) as up,
        running_gateway(config_for([up.url], listener=listener)) as gw,
    ):
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", gw.server.port)
        quiet_reader, quiet = await asyncio.open_connection("127.0.0.1", gw.server.port)
        started = time.monotonic()
        slow.write(b"GET /api/a HTTP/1.1\r\nHost: t\r\n")  # ... and nothing more
        await slow.drain()
        raw = await asyncio.wait_for(slow_reader.read(), 5)
        waited = time.monotonic() - started
        status, body = _error(raw)
        assert status == 408
        assert "did not arrive in time" in body["detail"]
        assert 0.4 < waited < 2.5
        # The quiet connection (no request begun) was left alone, and still serves.
        quiet.write(b"GET /api/b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(quiet_reader.read(), 5)).startswith(b"HTTP/1.1 200")
        slow.close()
        quiet.close()


async def test_a_body_larger_than_the_route_accepts_gets_413() -> None:
    """Declared too large: 413 at once, the upstream never asked, the connection closed, no
    100 Continue sent. Chunked and growing past the bound while streamed: 413, the upstream
    exchange abandoned without judging the endpoint. Within the bound: forwarded."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            seen.append(head)
            if b"transfer-encoding: chunked" in head.lower():
                await reader.read()  # until the gateway gives up on this exchange
                return
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    route = {"name": "api", "path_prefix": "/api", "upstream": "backends", "max_body_bytes": 1000}
    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url], routes=[route])) as gw,
    ):
        port = gw.server.port
        raw = await raw_exchange(
            port,
            b"POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n"
            b"Connection: close\r\n\r\n%b" % (b"x" * 1000),
        )
        assert raw.startswith(b"HTTP/1.1 201"), raw
        for request in (
            b"POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\nConnection: close\r\n"
            b"\r\n%b" % (b"x" * 1001),
            b"POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n"
            b"Expect: 100-continue\r\n\r\n",
        ):
            raw = await raw_exchange(port, request)
            assert b"100 Continue" not in raw
            status, body = _error(raw)
            assert status == 413
            assert body["error"] == "payload_too_large"
            assert "1000 bytes" in body["detail"]
        assert len(seen) == 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):  # (the gateway answers after the third chunk, and reads on)
            writer.write(b"190\r\n%b\r\n" % (b"y" * 400))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        writer.write_eof()
        status, body = _error(await asyncio.wait_for(reader.read(), 5))
        writer.close()
        assert status == 413
        endpoint = gw.runtime.snapshot.pools["backends"].endpoints[0]  # type: ignore[union-attr]
        assert endpoint.failures == 0
        assert endpoint.in_flight == 0
