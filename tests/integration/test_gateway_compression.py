"""gzip on routes with ``compress``: what is compressed (and how it is re-framed), what is
left alone, whole and streamed answers, HEAD, and a real client decompressing."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx

from tests.integration.gateway_fixtures import (
    ScriptedUpstream,
    config_for,
    dechunk,
    raw_exchange,
    running_gateway,
)

DOC = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(200)])


def _reply(head: bytes) -> bytes:
    """The scripted upstream's answer, chosen by the request path."""
    path = head.split(b" ", 2)[1]
    body = DOC.encode()
    kind = b"application/json"
    extra = b'ETag: "v1"\r\n'
    if path.endswith(b"/small"):
        body = b'{"ok":true}'
    elif path.endswith(b"/png"):
        kind = b"image/png"
    elif path.endswith(b"/brotli"):
        extra += b"Content-Encoding: br\r\n"
    elif path.endswith(b"/no-transform"):
        extra += b"Cache-Control: no-transform\r\n"
    elif path.endswith(b"/stream"):
        chunks = b"".join(b"%x\r\n%b\r\n" % (len(body), body) for _ in range(50))
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunks
            + b"0\r\n\r\n"
        )
    return b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\n%bContent-Length: %d\r\n\r\n%b" % (
        kind,
        extra,
        len(body),
        body if not head.startswith(b"HEAD") else b"",
    )


async def _handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(_reply(head))
        await writer.drain()


def _split(raw: bytes) -> tuple[dict[bytes, bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    return fields, body


async def test_compressible_answers_are_gzipped_for_clients_that_accept_it() -> None:
    route = {"name": "api", "path_prefix": "/api", "upstream": "backends", "compress": True}
    async with (
        ScriptedUpstream(_handler) as up,
        running_gateway(config_for([up.url], routes=[route])) as gw,
    ):
        port = gw.server.port

        async def get(path: bytes, accept: bytes = b"gzip, br", method: bytes = b"GET") -> bytes:
            return await raw_exchange(
                port,
                b"%b /api%b HTTP/1.1\r\nHost: t\r\nAccept-Encoding: %b\r\nConnection: close\r\n\r\n"
                % (method, path, accept),
            )

        fields, body = _split(await get(b"/doc"))
        assert fields[b"content-encoding"] == b"gzip"
        assert fields[b"vary"] == b"Accept-Encoding"
        assert fields[b"etag"] == b'W/"v1"'
        assert int(fields[b"content-length"]) == len(body) < len(DOC) // 3
        assert gzip.decompress(body) == DOC.encode()

        fields, body = _split(await get(b"/stream"))  # compressed as it streams
        assert fields[b"content-encoding"] == b"gzip"
        assert fields[b"transfer-encoding"] == b"chunked"
        assert gzip.decompress(dechunk(body)) == DOC.encode() * 50

        fields, body = _split(await get(b"/doc", method=b"HEAD"))
        assert fields[b"content-encoding"] == b"gzip"
        assert body == b""
        assert b"content-length" not in fields

        for path, accept in (
            (b"/doc", b"identity"),
            (b"/doc", b"gzip;q=0, deflate"),
            (b"/small", b"gzip"),
            (b"/png", b"gzip"),
            (b"/no-transform", b"gzip"),
        ):
            fields, body = _split(await get(path, accept))
            assert b"content-encoding" not in fields, (path, accept)
            assert body == _split(_reply(b"GET /api" + path + b" HTTP/1.1\r\n"))[1]
        fields, _ = _split(await get(b"/brotli"))
        assert fields[b"content-encoding"] == b"br"  # the upstream's own coding stays

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.get("/api/doc")  # httpx asks for gzip and decompresses
        assert response.headers["content-encoding"] == "gzip"
        assert response.json() == json.loads(DOC)


async def test_routes_without_compress_pass_answers_through() -> None:
    async with (
        ScriptedUpstream(_handler) as up,
        running_gateway(config_for([up.url])) as gw,
    ):
        raw = await raw_exchange(
            gw.server.port,
            b"GET /api/doc HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n"
            b"Connection: close\r\n\r\n",
        )
    fields, body = _split(raw)
    assert b"content-encoding" not in fields
    assert body == DOC.encode()
