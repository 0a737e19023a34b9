"""Requests that break HTTP/1.1's framing or Host rules are answered 400 and never reach an
upstream (the request-smuggling vectors a front proxy must refuse, RFC 9112 3.2, 6.1, 6.3);
an absolute-form target is served with its authority as the host."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.gateway_fixtures import ScriptedUpstream, config_for, running_gateway

VECTORS = {
    "content-length and chunked": b"POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "two content-lengths": b"POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
    b"Content-Length: 40\r\n\r\nabcdGET /api/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "unknown transfer coding": b"POST /api/a HTTP/1.1\r\nHost: t\r\n"
    b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "chunked not last": b"POST /api/a HTTP/1.1\r\nHost: t\r\n"
    b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "space before colon": b"POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length : 4\r\n\r\nabcd",
    "bare LF": b"GET /api/a HTTP/1.1\nHost: t\n\n",
    "obsolete line folding": b"GET /api/a HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n  folded\r\n\r\n",
    "negative chunk size": b"POST /api/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n-1\r\n\r\n",
    "NUL in a value": b"GET /api/a HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "two Host fields": b"GET /api/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "no Host in HTTP/1.1": b"GET /api/a HTTP/1.1\r\nX-A: 1\r\n\r\n",
    "negative content-length": b"POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(VECTORS.values()), ids=list(VECTORS))
async def test_a_malformed_request_gets_400_and_reaches_no_upstream(raw: bytes) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            seen.append(data)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url])) as gw,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), 5)  # ... and the connection closes
        writer.close()
        await asyncio.sleep(0.05)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert b"\r\nconnection: close\r\n" in answer
    assert seen == []


async def test_an_absolute_form_target_is_served_with_its_authority_as_host() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url])) as gw,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
        writer.write(
            b"GET http://api.example.com:8080/api/a?x=1 HTTP/1.1\r\nHost: ignored\r\n"
            b"Connection: close\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK")
    head = seen[0].lower()
    assert head.startswith(b"get /api/a?x=1 http/1.1\r\n")
    assert b"\r\nhost: api.example.com:8080\r\n" in head
    assert b"ignored" not in head
