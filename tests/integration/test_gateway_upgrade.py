"""Protocol switches and interim responses across the gateway: WebSocket sessions tunnelled
between a real client and a real server (the ``websockets`` library), the handshake's limits,
refusals, early bytes, half-closes, backpressure and shutdown; 1xx responses passed on; other
upgrades ignored or refused."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus

from tests.integration.gateway_fixtures import (
    ScriptedUpstream,
    config_for,
    raw_exchange,
    running_gateway,
)
from tests.integration.gateway_process import GatewayProcess

HANDSHAKE = (
    b"GET /api/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
SWITCHED = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


class EchoServer:
    """A WebSocket echo server (the ``websockets`` library) that keeps the handshakes seen."""

    def __init__(self) -> None:
        self.handshakes: list[Any] = []
        self.port = 0
        self.ended = asyncio.Event()

    async def handler(self, ws: ServerConnection) -> None:
        self.handshakes.append(ws.request)
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            self.ended.set()


async def test_a_websocket_session_is_tunnelled_both_ways() -> None:
    """Text and a 4 MB binary message go through and come back whole; the upstream sees the
    handshake with the forwarding headers; the close handshake ends both sides."""
    echo = EchoServer()
    async with serve(echo.handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with running_gateway(config_for([f"http://127.0.0.1:{port}"])) as gw:
            uri = f"ws://127.0.0.1:{gw.server.port}/api/chat"
            async with connect(uri, max_size=None) as ws:
                await ws.send("hello")
                assert await asyncio.wait_for(ws.recv(), 5) == "hello"
                assert gw.server.tunnels == 1  # (what /stats reports as "tunnels")
                blob = os.urandom(4 * 1024 * 1024)
                await ws.send(blob)
                assert await asyncio.wait_for(ws.recv(), 10) == blob
                assert ws.response is not None
                assert ws.response.status_code == 101
            await asyncio.wait_for(echo.ended.wait(), 5)
            (handshake,) = echo.handshakes
            assert handshake.path == "/api/chat"
            assert handshake.headers["X-Forwarded-For"] == "127.0.0.1"
            assert handshake.headers["Upgrade"].lower() == "websocket"
            # The tunnel is gone with the session: no connection is left behind.
            for _ in range(50):
                if not gw.server.connections:
                    break
                await asyncio.sleep(0.02)
            assert not gw.server.connections


async def test_the_handshake_is_rate_limited_like_any_request() -> None:
    echo = EchoServer()
    async with serve(echo.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = config_for(
            [f"http://127.0.0.1:{port}"],
            policies={"two": {"rate": "2/60s"}},
            routes=[
                {
                    "name": "api",
                    "path_prefix": "/api",
                    "upstream": "backends",
                    "limits": [{"policy": "two", "key": "ip"}],
                }
            ],
        )
        async with running_gateway(config) as gw:
            uri = f"ws://127.0.0.1:{gw.server.port}/api/ws"
            for _ in range(2):
                async with connect(uri) as ws:
                    await ws.send("x")
                    assert await ws.recv() == "x"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(uri):
                    pass
            assert refused.value.response.status_code == 429
            assert refused.value.response.headers["Retry-After"]
            assert len(echo.handshakes) == 2


async def test_a_refused_upgrade_is_relayed_and_http_goes_on() -> None:
    """The upstream answers the handshake with 403: the client gets the 403, and the
    connection serves HTTP afterwards (nothing was switched)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            status = b"403 Forbidden" if b"upgrade: websocket" in head.lower() else b"200 OK"
            writer.write(b"HTTP/1.1 %b\r\nContent-Length: 2\r\n\r\nno" % status)
            await writer.drain()

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url])) as gw,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
        writer.write(HANDSHAKE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 403")
        assert await reader.readexactly(2) == b"no"
        writer.write(b"GET /api/plain HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()


async def test_bytes_that_arrive_with_the_handshake_and_the_101_cross_the_tunnel() -> None:
    """The client's first frame in the handshake's packet and the upstream's first bytes in
    the 101's packet are not lost at the switch; a half-close is passed on."""
    seen = bytearray()
    upstream_ended = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"connection: upgrade" in head.lower()
        writer.write(SWITCHED + b"server-first")
        await writer.drain()
        seen.extend(await reader.read())  # until the client's half-close arrives
        upstream_ended.set()
        writer.write(b"|bye")
        await writer.drain()

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url])) as gw,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
        writer.write(HANDSHAKE + b"client-first")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
        assert await asyncio.wait_for(reader.readexactly(12), 5) == b"server-first"
        writer.write(b"|more")
        await writer.drain()
        writer.write_eof()  # half-close: the upstream sees its end of stream, and answers
        await asyncio.wait_for(upstream_ended.wait(), 5)
        assert bytes(seen) == b"client-first|more"
        assert await asyncio.wait_for(reader.read(), 5) == b"|bye"  # then the tunnel closes
        writer.close()


async def test_a_client_that_stops_reading_holds_back_the_upstream() -> None:
    """64 MB pushed through a tunnel to a client that reads nothing for a while: the gateway
    stops reading the upstream (its buffer to the client stays small), then all arrives."""
    chunk = bytes(range(256)) * 256  # 64 KB
    total = 1024

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SWITCHED)
        for _ in range(total):
            writer.write(chunk)
            await writer.drain()
        writer.close()

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url])) as gw,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port, limit=2**16)
        writer.write(HANDSHAKE)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await asyncio.sleep(1.0)
        (conn,) = gw.server.connections  # type: ignore[union-attr]
        assert conn.tunnel is not None
        held = conn.tunnel.client.transport.get_write_buffer_size()
        assert held < 4 * 1024 * 1024, f"the gateway buffered {held} bytes"
        received = 0
        while data := await asyncio.wait_for(reader.read(2**20), 10):
            received += len(data)
        assert received == total * len(chunk)
        writer.close()


async def test_shutdown_cuts_open_tunnels_after_the_grace_period() -> None:
    echo = EchoServer()
    async with serve(echo.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = config_for(
            [f"http://127.0.0.1:{port}"],
            listener={"host": "127.0.0.1", "port": 8080, "shutdown_grace": 0.3},
        )
        async with running_gateway(config) as gw:
            ws = await connect(f"ws://127.0.0.1:{gw.server.port}/api/ws")
            await ws.send("x")
            assert await ws.recv() == "x"
        # The gateway stopped (within its grace period): the session is over on both sides.
        await asyncio.wait_for(ws.wait_closed(), 5)
        await asyncio.wait_for(echo.ended.wait(), 5)


async def test_interim_responses_reach_http11_clients_only() -> None:
    """A 103 Early Hints is passed on (hop-by-hop lines removed) before the final response, on
    the express lane (GET) and the pipeline (POST) alike; a 100 Continue from the upstream is
    not (the gateway answers Expect itself); an HTTP/1.0 client gets no 1xx at all."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"POST"):
                await reader.readexactly(4)
            writer.write(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n"
                b"Connection: x-hint\r\nX-Hint: hop\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            )
            await writer.drain()

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url])) as gw,
    ):
        for request in (
            b"GET /api/page HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            b"POST /api/page HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
            b"Connection: close\r\n\r\nbody",
        ):
            raw = await raw_exchange(gw.server.port, request)
            assert raw.startswith(
                b"HTTP/1.1 103 Early Hints\r\nlink: </app.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK"
            ), raw
            assert b"100 Continue" not in raw
            assert b"x-hint" not in raw
            assert raw.endswith(b"\r\n\r\nok")
        raw = await raw_exchange(gw.server.port, b"GET /api/page HTTP/1.0\r\nHost: t\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 OK"), raw
        assert raw.endswith(b"ok")


async def test_other_upgrades_are_ignored_and_connect_is_refused() -> None:
    """An h2c upgrade is served over HTTP/1.1 (the upstream never sees Upgrade) and the
    connection goes on; CONNECT, and an upgrade with a body, get 501."""
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url])) as gw,
    ):
        raw = await raw_exchange(
            gw.server.port,
            b"GET /api/a HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
            b"GET /api/b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        assert raw.count(b"HTTP/1.1 200 OK") == 2, raw
        assert len(heads) == 2
        assert heads[1].startswith(b"GET /api/b ")
        assert b"upgrade" not in heads[0].lower()
        assert b"http2-settings" not in heads[0].lower()
        for request in (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            b"POST /api/a HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
            b"Content-Length: 3\r\n\r\nabc",
        ):
            raw = await raw_exchange(gw.server.port, request)
            assert raw.startswith(b"HTTP/1.1 501 "), raw
        assert len(heads) == 2


def test_a_websocket_session_through_the_served_process(tmp_path: Path) -> None:
    """The same tunnel under ``gatekeeper serve`` (uvloop's transports, not asyncio's)."""

    async def scenario() -> None:
        echo = EchoServer()
        async with serve(echo.handler, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            gateway = GatewayProcess(tmp_path, config_for([f"http://127.0.0.1:{port}"]))
            gateway.start()
            try:
                uri = f"ws://127.0.0.1:{gateway.port}/api/ws"
                async with connect(uri, max_size=None) as ws:
                    for size in (5, 70_000, 3 * 1024 * 1024):
                        message = os.urandom(size)
                        await ws.send(message)
                        assert await asyncio.wait_for(ws.recv(), 10) == message
                await asyncio.wait_for(echo.ended.wait(), 5)
            finally:
                gateway.stop()

    asyncio.run(scenario())
