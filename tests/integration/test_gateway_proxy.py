"""Forwarding through a real gateway to real backends on loopback."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx
import pytest

from tests.integration.gateway_fixtures import (
    RawUpstream,
    backends,
    config_for,
    raw_exchange,
    running_gateway,
)
from tests.servers import free_port


async def test_round_robin_over_three_backends() -> None:
    """GET /api/info is forwarded round robin: 9 requests reach each backend 3 times."""
    async with backends(3) as bs, running_gateway(config_for([b.url for b in bs])) as gw:  # noqa: SIM117
        async with httpx.AsyncClient(base_url=gw.url) as client:
            names = Counter()
            for _ in range(9):
                response = await client.get("/api/info")
                assert response.status_code == 200
                names[response.json()["backend"]] += 1
    assert names == {"backend-1": 3, "backend-2": 3, "backend-3": 3}


async def test_request_hop_by_hop_headers_are_stripped_and_forwarding_headers_set() -> None:
    """Connection-listed, Keep-Alive, TE, Proxy-* never reach the upstream; X-Forwarded-* and
    Forwarded describe the real client."""
    async with backends(1) as bs, running_gateway(config_for([bs[0].url])) as gw:  # noqa: SIM117
        async with httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.get(
                "/api/x?q=1",
                headers={
                    "Connection": "keep-alive, X-Secret",
                    "X-Secret": "hop",
                    "Keep-Alive": "timeout=5",
                    "TE": "trailers",
                    "Proxy-Authorization": "Basic Zm9vOmJhcg==",
                    "X-End-To-End": "kept",
                },
            )
    seen = response.json()["headers"]
    for name in ("x-secret", "keep-alive", "te", "proxy-authorization", "connection"):
        assert name not in seen, name
    assert seen["x-end-to-end"] == "kept"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{gw.server.port}"
    assert seen["forwarded"] == f'for=127.0.0.1;proto=http;host="127.0.0.1:{gw.server.port}"'
    assert seen["host"] == f"127.0.0.1:{gw.server.port}"
    assert response.json()["path"] == "/api/x?q=1"


async def test_response_hop_by_hop_headers_are_stripped() -> None:
    """Headers the upstream lists in Connection, and Keep-Alive, do not reach the client."""
    upstream = await RawUpstream(
        b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=9\r\n"
        b"Proxy-Authenticate: Basic\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
    ).start()
    try:
        async with running_gateway(config_for([upstream.url])) as gw:  # noqa: SIM117
            async with httpx.AsyncClient(base_url=gw.url) as client:
                response = await client.get("/api/anything")
    finally:
        await upstream.stop()
    assert response.status_code == 200
    assert response.text == "ok"
    assert response.headers["x-kept"] == "yes"
    for name in ("x-hop", "keep-alive", "proxy-authenticate"):
        assert name not in response.headers, name


async def test_spoofed_forwarded_for_from_untrusted_client_is_ignored() -> None:
    """Without trusted proxies a client's X-Forwarded-For neither reaches the upstream nor
    changes its per-IP limit."""
    data = config_for([])
    async with backends(1) as bs:
        data = config_for(
            [bs[0].url],
            policies={"per-ip": {"rate": "2/60s", "algorithm": "fixed_window"}},
            routes=[{"path_prefix": "/api", "upstream": "backends", "limits": ["per-ip"]}],
        )
        async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            statuses = []
            for i in range(4):
                response = await client.get("/api/x", headers={"X-Forwarded-For": f"10.0.0.{i}"})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    assert response.json()["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert statuses == [200, 200, 429, 429]


async def test_forwarded_for_from_trusted_proxy_is_believed() -> None:
    """From a trusted proxy the client in X-Forwarded-For is the limit subject and the chain
    is extended."""
    async with backends(1) as bs:
        data = config_for(
            [bs[0].url],
            trusted_proxies=["127.0.0.0/8"],
            policies={"per-ip": {"rate": "2/60s", "algorithm": "fixed_window"}},
            routes=[{"path_prefix": "/api", "upstream": "backends", "limits": ["per-ip"]}],
        )
        async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            a = [
                (await client.get("/api/x", headers={"X-Forwarded-For": "203.0.113.7"}))
                for _ in range(3)
            ]
            b = await client.get("/api/x", headers={"X-Forwarded-For": "198.51.100.9"})
    assert [r.status_code for r in a] == [200, 200, 429]
    assert b.status_code == 200
    assert a[0].json()["headers"]["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert b.json()["headers"]["x-forwarded-for"] == "198.51.100.9, 127.0.0.1"


async def test_rate_limited_answer_is_429_problem_json_with_ratelimit_headers() -> None:
    """The 429 carries RateLimit, RateLimit-Policy and Retry-After and a JSON problem body."""
    async with backends(1) as bs:
        data = config_for(
            [bs[0].url],
            policies={"per-ip": {"rate": "1/60s", "algorithm": "fixed_window"}},
            routes=[{"path_prefix": "/api", "upstream": "backends", "limits": ["per-ip"]}],
        )
        async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            ok = await client.get("/api/x")
            denied = await client.get("/api/x")
    assert ok.status_code == 200
    assert ok.headers["ratelimit-policy"] == '"per-ip";q=1;w=60'
    assert denied.status_code == 429
    assert denied.headers["content-type"] == "application/problem+json"
    assert int(denied.headers["retry-after"]) >= 1
    assert denied.headers["ratelimit"].startswith('"per-ip";r=0;')
    assert denied.json()["status"] == 429


async def test_chunked_upload_and_chunked_download() -> None:
    """A chunked request body is forwarded and the chunked echo streamed back, both intact."""
    parts = [bytes([65 + i % 26]) * (1000 + i) for i in range(50)]

    async def body():  # type: ignore[no-untyped-def]
        for part in parts:
            yield part

    async with backends(1) as bs:
        data = config_for([bs[0].url], routes=[{"path_prefix": "/echo", "upstream": "backends"}])
        async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.post("/echo", content=body())
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == b"".join(parts)


async def test_head_keeps_content_length_and_connection_stays_usable() -> None:
    """HEAD returns the upstream's Content-Length without a body; the next request on the
    same connections works."""
    async with backends(1) as bs, running_gateway(config_for([bs[0].url])) as gw:  # noqa: SIM117
        async with httpx.AsyncClient(base_url=gw.url) as client:
            head = await client.head("/api/bytes/1000")
            get = await client.get("/api/bytes/1000")
            head2 = await client.head("/api/bytes/5")
    assert head.status_code == 200
    assert head.headers["content-length"] == "1000"
    assert head.content == b""
    assert get.content == b"x" * 1000
    assert head2.headers["content-length"] == "5"


async def test_connection_refused_is_502_json() -> None:
    """An upstream that refuses connections gives 502 with a JSON body."""
    dead = f"http://127.0.0.1:{free_port()}"
    data = config_for([dead], routes=[{"path_prefix": "/api", "upstream": "backends",
                                        "retry": {"attempts": 1}}])  # fmt: skip
    async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/api/x")
    assert response.status_code == 502
    assert response.json()["error"] == "bad_gateway"


async def test_slow_upstream_is_504_json() -> None:
    """An upstream slower than the route's read timeout gives 504 with a JSON body."""
    async with backends(1) as bs:
        data = config_for(
            [bs[0].url],
            routes=[{"path_prefix": "/api", "upstream": "backends",
                     "timeouts": {"read": 0.2}, "retry": {"attempts": 1}}],
        )  # fmt: skip
        async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.get("/api/delay/3000")
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"


async def test_keep_alive_reuses_upstream_connections() -> None:
    """Twenty sequential requests use one client connection and one upstream connection."""
    async with backends(1) as bs, running_gateway(config_for([bs[0].url])) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            for _ in range(20):
                assert (await client.get("/api/x")).status_code == 200
        stats = gw.runtime.snapshot.proxy.stats()  # type: ignore[union-attr]
    assert stats[f"127.0.0.1:{bs[0].port}"]["opened"] == 1
    assert stats[f"127.0.0.1:{bs[0].port}"]["reused"] == 19
    assert bs[0].connections == 1


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    """A client sending Expect: 100-continue gets 100 Continue, then the upstream's answer."""
    async with backends(1) as bs, running_gateway(config_for([bs[0].url])) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
        writer.write(
            b"POST /api/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"hello")
        rest = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    assert rest.startswith(b"HTTP/1.1 200")
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["body_bytes"] == 5


async def test_pipelined_requests_are_answered_in_order() -> None:
    """Two requests sent back to back on one connection get two answers, in order."""
    async with backends(1) as bs, running_gateway(config_for([bs[0].url])) as gw:
        data = await raw_exchange(
            gw.server.port,
            b"GET /api/first HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /api/second HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    first = data.find(b"/api/first")
    second = data.find(b"/api/second")
    assert data.count(b"HTTP/1.1 200") == 2
    assert 0 < first < second


async def test_malformed_request_gets_400_json() -> None:
    """Garbage instead of HTTP gets a 400 JSON answer and a closed connection."""
    async with running_gateway(config_for(["http://127.0.0.1:9"])) as gw:
        data = await raw_exchange(gw.server.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400")
    assert b'"error"' in data


async def test_unrouted_path_goes_to_the_builtin_api() -> None:
    """Paths no route takes are served by the built-in API (404 JSON for unknown ones)."""
    async with running_gateway(config_for(["http://127.0.0.1:9"])) as gw:  # noqa: SIM117
        async with httpx.AsyncClient(base_url=gw.url) as client:
            health = await client.get("/health")
            missing = await client.get("/nothing-here")
    assert health.json() == {"status": "healthy"}
    assert missing.status_code == 404


@pytest.mark.redis
async def test_redis_backed_limit_through_the_gateway(redis_url: str, redis_prefix: str) -> None:
    """With Redis configured the route's limit is enforced through the Redis store."""
    async with backends(1) as bs:
        data = config_for(
            [bs[0].url],
            policies={redis_prefix: {"rate": "3/60s", "algorithm": "fixed_window"}},
            routes=[{"path_prefix": "/api", "upstream": "backends", "limits": [redis_prefix]}],
            # A loaded CI machine can be slower than the 20 ms default: never fail open here.
            limiter={"deadline": 2.0},
        )
        async with running_gateway(data, redis_url=redis_url) as gw:  # noqa: SIM117
            async with httpx.AsyncClient(base_url=gw.url) as client:
                statuses = [(await client.get("/api/x")).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
