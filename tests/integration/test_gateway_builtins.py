"""The built-in API on the gateway's listener: health, readiness, stats, metrics, admin calls."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gatekeeper.gateway.mock_backend import MockBackend
from tests.integration.gateway_fixtures import (
    ADMIN_TOKEN,
    backends,
    config_for,
    running_gateway,
)
from tests.servers import RedisServer, free_port

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_health_ready_stats_and_metrics() -> None:
    """/health is liveness, /ready sees the pools, /stats the pools and /metrics counts."""
    async with backends(2) as bs, running_gateway(config_for([b.url for b in bs])) as gw:  # noqa: SIM117
        async with httpx.AsyncClient(base_url=gw.url) as client:
            assert (await client.get("/api/x")).status_code == 200
            health = await client.get("/health")
            ready = await client.get("/ready")
            stats = await client.get("/stats")
            metrics = await client.get("/metrics")
    assert health.json() == {"status": "healthy"}
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    pool = stats.json()["pools"]["backends"]
    assert pool["strategy"] == "round_robin"
    assert len(pool["endpoints"]) == 2
    assert 'gatekeeper_http_requests_total{route="api",status="200",upstream="backends"} 1.0' in (
        metrics.text
    )


async def test_change_strategy_needs_the_admin_token() -> None:
    """/change_strategy: 401 without credentials, 403 with wrong ones, 422 for an unknown
    strategy or pool, 200 and a visible change with the token."""
    async with backends(2) as bs, running_gateway(config_for([b.url for b in bs])) as gw:  # noqa: SIM117
        async with httpx.AsyncClient(base_url=gw.url) as client:
            body = {"pool": "backends", "strategy": "least_connections"}
            anonymous = await client.post("/change_strategy", json=body)
            wrong = await client.post(
                "/change_strategy", json=body, headers={"Authorization": "Bearer nope"}
            )
            unknown = await client.post(
                "/change_strategy", json={"pool": "backends", "strategy": "telepathy"},
                headers=AUTH,
            )  # fmt: skip
            no_pool = await client.post(
                "/change_strategy", json={"pool": "nope", "strategy": "round_robin"}, headers=AUTH
            )
            bad_body = await client.post("/change_strategy", json={"pool": 3}, headers=AUTH)
            ok = await client.post("/change_strategy", json=body, headers=AUTH)
            stats = await client.get("/stats")
    assert anonymous.status_code == 401
    assert wrong.status_code == 403
    assert unknown.status_code == 422
    assert no_pool.status_code == 422
    assert bad_body.status_code == 422
    assert ok.status_code == 200
    assert stats.json()["pools"]["backends"]["strategy"] == "least_connections"


async def test_ready_says_degraded_but_stays_200_when_a_pool_has_no_healthy_endpoint() -> None:
    """A pool whose only endpoint fails its health checks makes /ready ``degraded``, not 503:
    every replica shares the pool, and taking them all out of a Service would also stop the
    routes that still work (issue 20)."""
    dead = f"http://127.0.0.1:{free_port()}"
    data = config_for([dead])
    data["upstreams"]["backends"]["health"] = {
        "path": "/health", "interval": 0.05, "timeout": 0.2, "unhealthy_threshold": 1,
    }  # fmt: skip
    async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        for _ in range(100):  # bounded: health checks run every 50 ms
            ready = await client.get("/ready")
            if ready.json()["degraded"]:
                break
            await asyncio.sleep(0.05)
        metrics = await client.get("/metrics")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["degraded"] == ["pool:backends"]
    assert ready.json()["checks"]["pools"] == {"backends": "0/1 healthy"}
    assert 'gatekeeper_degraded{part="pool:backends"} 1.0' in metrics.text


async def test_admin_reload_applies_a_valid_file_and_refuses_an_invalid_one(
    tmp_path: Path,
) -> None:
    """POST /admin/reload swaps in a valid file; an invalid one gets 422 listing every error
    and the previous configuration keeps serving."""
    async with backends(2) as bs:
        first = config_for([bs[0].url])
        path = tmp_path / "gatekeeper.yaml"
        path.write_text(yaml.safe_dump(first))
        async with running_gateway(first, config_path=str(path)) as gw:  # noqa: SIM117
            async with httpx.AsyncClient(base_url=gw.url) as client:
                before = (await client.get("/api/x")).json()["backend"]
                path.write_text(yaml.safe_dump(config_for([bs[1].url])))
                anonymous = await client.post("/admin/reload")
                reloaded = await client.post("/admin/reload", headers=AUTH)
                after = (await client.get("/api/x")).json()["backend"]
                broken = config_for([bs[0].url])
                broken["routes"][0]["upstream"] = "nowhere"
                broken["listener"]["port"] = "eighty"
                path.write_text(yaml.safe_dump(broken))
                refused = await client.post("/admin/reload", headers=AUTH)
                still = (await client.get("/api/x")).json()["backend"]
    assert (before, after, still) == ("backend-1", "backend-2", "backend-2")
    assert anonymous.status_code == 401
    assert reloaded.status_code == 200
    assert refused.status_code == 422
    problems = [p["problem"] for p in refused.json()["problems"]]
    assert any("listener.port" in p for p in problems)
    assert any("routes.0.upstream" in p and "nowhere" in p for p in problems)


async def test_server_sent_events_stream_from_the_endpoint_table() -> None:
    """A streaming answer of the built-in API reaches the client event by event."""
    from collections.abc import AsyncIterator

    from gatekeeper.endpoints import Call, Endpoint, StreamReply

    async with running_gateway(config_for([MockBackend("x").url])) as gw:
        release = asyncio.Event()

        def events(call: Call) -> StreamReply:
            async def stream() -> AsyncIterator[bytes]:
                yield b"data: one\n\n"
                await release.wait()
                yield b"data: two\n\n"

            return StreamReply(200, [(b"content-type", b"text/event-stream")], stream())

        gw.runtime.dispatcher.add(Endpoint("GET", "/events-test", events))
        async with httpx.AsyncClient(base_url=gw.url) as client:  # noqa: SIM117
            async with client.stream("GET", "/events-test") as response:
                chunks = response.aiter_bytes()
                first = await asyncio.wait_for(anext(chunks), 5)
                release.set()
                rest = b"".join([chunk async for chunk in chunks])
    assert response.headers["content-type"].startswith("text/event-stream")
    assert first == b"data: one\n\n"
    assert rest == b"data: two\n\n"


async def test_health_is_answered_on_the_callback_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /health over keep-alive is answered without a task (the synchronous dispatch on the
    exchange's callbacks), its request id echoed; /ready (it awaits the store) takes one."""
    from gatekeeper.gateway.flow.exchange import Exchange

    tasks: list[str] = []
    run = Exchange.run

    def counted(self: Exchange, work: Any, **kw: Any) -> Any:
        tasks.append(self.request.path)
        return run(self, work, **kw)

    monkeypatch.setattr(Exchange, "run", counted)
    async with running_gateway(config_for([MockBackend("x").url])) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
        try:
            for n in range(3):
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: h-%d\r\n\r\n" % n)
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200")
                assert head.count(b"x-request-id: ") == 1
                assert b"x-request-id: h-%d\r\n" % n in head
                assert await reader.readexactly(20) == b'{"status":"healthy"}'
            assert tasks == []
            writer.write(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            assert tasks == ["/ready"]
        finally:
            writer.close()


async def test_an_unexpected_error_is_one_json_500_and_the_connection_serves_on() -> None:
    """A built-in endpoint that fails with a bug answers the problem shape's 500 (the request
    id echoed, nothing of the exception shown) and the keep-alive connection goes on."""
    from gatekeeper.endpoints import Call, Endpoint, Reply

    def broken(call: Call) -> Reply:
        raise KeyError("secret-internal-detail")

    async def broken_later(call: Call) -> Reply:
        await asyncio.sleep(0)
        raise KeyError("secret-internal-detail")

    async with running_gateway(config_for([MockBackend("x").url])) as gw:
        gw.runtime.dispatcher.add(Endpoint("GET", "/broken", broken))
        gw.runtime.dispatcher.add(Endpoint("GET", "/broken-later", broken_later))
        async with httpx.AsyncClient(base_url=gw.url) as client:
            for target in ("/broken", "/broken-later"):
                failed = await client.get(target, headers={"x-request-id": "r-500"})
                assert failed.status_code == 500
                assert failed.headers["content-type"] == "application/problem+json"
                assert failed.headers["x-request-id"] == "r-500"
                assert failed.json()["error"] == "internal_error"
                assert "secret" not in failed.text
            assert (await client.get("/health")).status_code == 200


async def test_builtin_answers_carry_cors_and_one_request_id_on_every_way_out() -> None:
    """With the file's top-level ``cors``, a synchronous endpoint, an asynchronous one, a body
    read in a task, a refused body and a 404 all carry the CORS fields and exactly one request
    id (the client's)."""
    origin = "https://app.example.test"
    data = config_for(["http://127.0.0.1:9"], cors={"allow_origins": [origin]})
    headers = {"origin": origin, "x-request-id": "cors-rid-1", **AUTH}
    async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        answers = [
            await client.get("/health", headers=headers),
            await client.get("/ready", headers=headers),
            await client.post(
                "/change_strategy",
                headers={**headers, "expect": "100-continue"},
                json={"upstream": "backends", "strategy": "least_connections"},
            ),
            await client.post("/change_strategy", headers=headers, content=b"x" * 2_000_000),
            await client.get("/no/such/endpoint", headers=headers),
        ]
    statuses = [a.status_code for a in answers]
    # (/ready is answered by an asynchronous handler: ready or not, as the health checks say.)
    assert statuses[1] in (200, 503)
    assert statuses[:1] + statuses[2:] == [200, 200, 413, 404]
    for answer in answers:
        assert answer.headers["access-control-allow-origin"] == origin, answer.request.url
        assert answer.headers.get_list("x-request-id") == ["cors-rid-1"], answer.request.url


async def test_stats_has_the_load_balancer_and_the_cache_at_a_glance() -> None:
    """/stats gains load_balancer (strategy per pool, requests and health per endpoint) and
    cache (hits, misses, hit ratio, entries, bytes); zeros when nothing caches."""
    async with backends(2) as bs:
        routes = [
            {"name": "api", "path_prefix": "/api", "upstream": "backends"},
            {"name": "c", "path_prefix": "/c", "upstream": "backends",
             "cache": {"default_ttl": 30}},
        ]  # fmt: skip
        async with (
            running_gateway(config_for([b.url for b in bs], routes=routes)) as gw,
            httpx.AsyncClient(base_url=gw.url) as client,
        ):
            for _ in range(4):
                assert (await client.get("/api/x")).status_code == 200
            for _ in range(3):
                await client.get("/c/page")
            stats = (await client.get("/stats")).json()
        async with (
            running_gateway(config_for([b.url for b in bs])) as plain,
            httpx.AsyncClient(base_url=plain.url) as client,
        ):
            nothing = (await client.get("/stats")).json()
    balancer = stats["load_balancer"]["backends"]
    assert balancer["strategy"] == "round_robin"
    assert sorted(e["requests"] for e in balancer["endpoints"]) == [2, 3]  # 4 + the one miss
    assert all(e["healthy"] for e in balancer["endpoints"])
    cache = stats["cache"]
    assert (cache["enabled"], cache["hits"], cache["misses"]) == (True, 2, 1)
    assert cache["hit_ratio"] == pytest.approx(2 / 3, abs=1e-3)
    assert cache["entries"] == 1
    assert cache["bytes"] > 0
    assert nothing["cache"] == {
        "enabled": False, "hits": 0, "misses": 0, "hit_ratio": 0.0, "entries": 0, "bytes": 0
    }  # fmt: skip


async def test_the_bare_address_answers_a_summary_unless_a_route_takes_it() -> None:
    """GET / is a small JSON summary with links; a catch-all route still takes it."""
    async with backends(1) as bs:
        async with (
            running_gateway(config_for([bs[0].url])) as gw,
            httpx.AsyncClient(base_url=gw.url) as client,
        ):
            summary = (await client.get("/")).json()
        routes = [{"name": "all", "path_prefix": "/", "upstream": "backends"}]
        async with (
            running_gateway(config_for([bs[0].url], routes=routes)) as gw,
            httpx.AsyncClient(base_url=gw.url) as client,
        ):
            proxied = (await client.get("/")).json()
            health = (await client.get("/health")).json()
    assert summary["name"] == "Gatekeeper"
    assert set(summary["links"]) >= {"docs", "dashboard", "health"}
    assert proxied["backend"] == "backend-1"
    assert health == {"status": "healthy"}


async def test_ready_names_a_store_outage_and_the_degraded_limiter_then_recovers(
    private_redis: RedisServer,
) -> None:
    """Redis paused under a fail-open limit: requests still pass, /ready says ``degraded``
    (store and limiter) with 200 instead of taking the replica out, the gauge says so; once
    Redis is back the limiter recovers by itself and /ready is ``ready`` again."""
    data = config_for(
        [],
        policies={"per-ip": {"rate": "1000/minute", "failure": "open"}},
        routes=[{
            "name": "api", "path_prefix": "/api", "upstream": "backends",
            "limits": [{"policy": "per-ip", "key": "ip"}],
        }],
    )  # fmt: skip
    async with backends(1) as bs:
        data["upstreams"]["backends"]["endpoints"] = [{"url": bs[0].url}]
        async with running_gateway(data, redis_url=private_redis.url) as gw:  # noqa: SIM117
            async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
                assert (await client.get("/api/x")).status_code == 200
                assert (await client.get("/ready")).json()["status"] == "ready"
                private_redis.pause()
                try:
                    during = [(await client.get("/api/x")).status_code for _ in range(5)]
                    asked = time.monotonic()
                    ready = await client.get("/ready")
                    waited = time.monotonic() - asked
                    metrics = await client.get("/metrics")
                finally:
                    private_redis.resume()
                for _ in range(100):  # the breaker's cool-down (1 s) lets a probe through
                    await client.get("/api/x")
                    after = await client.get("/ready")
                    if after.json()["status"] == "ready":
                        break
                    await asyncio.sleep(0.05)
    assert during == [200] * 5
    assert ready.status_code == 200
    assert waited < 1.5  # well inside a readiness probe's timeout, Redis frozen or not
    assert ready.json()["status"] == "degraded"
    assert set(ready.json()["degraded"]) == {"store", "limiter"}
    assert ready.json()["checks"]["limiter"] == "degraded"
    assert 'gatekeeper_degraded{part="limiter"} 1.0' in metrics.text
    assert 'gatekeeper_ratelimit_degraded_decisions_total{mode="fail_open",policy="per-ip"}' in (
        metrics.text
    )
    assert after.json()["status"] == "ready"
