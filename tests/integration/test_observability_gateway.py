"""Traffic through the real gateway, read back from /metrics, the dashboards and the JSON APIs."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from gatekeeper.app import Runtime, serve
from gatekeeper.gateway.config import parse_config
from gatekeeper.gateway.mock_backend import MockBackend, run_backends
from gatekeeper.observability.component import ObservabilityComponent
from gatekeeper.settings import Settings
from tests.servers import free_port, tool

ADMIN = "observability-test-token"


def demo_like(port: int, backends: list[str]) -> dict[str, Any]:
    """The demo's gateway (``/api`` over the backends, 5 per 10 s per client IP), counted with a
    sliding log instead of the demo's fixed window: exactly 5 in any 10 s, so that no window
    boundary can fall inside a test and let a sixth request through."""
    return {
        "listener": {"host": "127.0.0.1", "port": port, "shutdown_grace": 1},
        "policies": {"per-ip": {"rate": "5/10s", "algorithm": "sliding_log"}},
        "upstreams": {"backends": {"endpoints": [{"url": url} for url in backends]}},
        "routes": [
            {
                "name": "api",
                "path_prefix": "/api",
                "upstream": "backends",
                "limits": [{"policy": "per-ip", "key": "ip"}],
                "retry": {"attempts": 1},
            }
        ],
    }


@dataclass
class Gateway:
    url: str
    runtime: Runtime
    backends: list[MockBackend]

    @property
    def component(self) -> ObservabilityComponent:
        return next(c for c in self.runtime.components if isinstance(c, ObservabilityComponent))


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    backends = await run_backends(2)
    port = free_port()
    config = parse_config(demo_like(port, [b.url for b in backends]), "<test>")
    settings = Settings(
        redis_url="",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}",
        admin_token=SecretStr(ADMIN),
        log_level="warning",
    )
    stop = asyncio.Event()
    ready: asyncio.Future[Runtime] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(settings, config, stop=stop, on_ready=lambda runtime: ready.set_result(runtime))
    )
    try:
        runtime = await asyncio.wait_for(asyncio.shield(ready), 15)
        yield Gateway(f"http://127.0.0.1:{port}", runtime, backends)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        for backend in backends:
            await backend.stop()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


async def _burst(client: httpx.AsyncClient, n: int) -> list[int]:
    return [(await client.get("/api/info")).status_code for _ in range(n)]


async def test_traffic_is_counted_in_prometheus_metrics(gateway: Gateway) -> None:
    """Seven requests to the demo route: /metrics counts five 200s, two 429s and the decisions."""
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        assert await _burst(client, 7) == [200] * 5 + [429] * 2
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    s = _samples(response.text)
    ok = frozenset({("route", "api"), ("status", "200"), ("upstream", "backends")})
    assert s[("gatekeeper_http_requests_total", ok)] == 5
    name = "gatekeeper_http_requests_total"
    limited = [v for (n, labels), v in s.items() if n == name and ("status", "429") in labels]
    assert limited == [2]
    assert s[("gatekeeper_http_request_duration_seconds_count", frozenset({("route", "api")}))] == 7
    allowed = frozenset({("policy", "per-ip"), ("outcome", "allowed")})
    assert s[("gatekeeper_ratelimit_decisions_total", allowed)] == 5
    denied = frozenset({("policy", "per-ip"), ("outcome", "limited")})
    assert s[("gatekeeper_ratelimit_decisions_total", denied)] == 2
    assert s[("gatekeeper_http_requests_in_flight", frozenset())] == 0


async def test_gateway_exposition_passes_promtool(gateway: Gateway) -> None:
    """The /metrics served by a gateway that has seen traffic passes `promtool check metrics`."""
    promtool = tool("promtool")
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        await _burst(client, 7)
        text = (await client.get("/metrics")).content
    result = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


async def test_dashboard_snapshot_shows_the_traffic_and_pools(gateway: Gateway) -> None:
    """After a burst, the snapshot counts requests, limits, the policy and the pool's strategy."""
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        await _burst(client, 7)
        await gateway.component.tick()
        view = (await client.get("/dashboard/snapshot")).json()
    assert view["mode"] == "local"
    assert view["replicas"] == 1
    assert view["totals"]["requests"] == 7
    assert view["totals"]["limited"] == 2
    assert view["totals"]["upstreams"] == {"backends": 5}
    assert view["policies"]["per-ip"] == {"allowed": 5, "limited": 2}
    (pool,) = view["pools"]
    assert pool["name"] == "backends"
    assert pool["strategy"] == "round_robin"
    assert len(pool["endpoints"]) == 2


async def test_events_stream_pushes_a_new_snapshot_when_traffic_flows(gateway: Gateway) -> None:
    """/dashboard/events is an SSE stream whose snapshots start counting the new requests."""
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=10) as client,
        client.stream("GET", "/dashboard/events") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = _events(stream.aiter_lines())
        first = await asyncio.wait_for(anext(events), 5)
        assert first["totals"]["requests"] == 0
        await _burst(client, 3)
        seen = 0
        for _ in range(10):  # the ticker publishes once per second: bounded wait
            view = await asyncio.wait_for(anext(events), 5)
            seen = view["totals"]["requests"]
            if seen:
                break
        assert seen == 3


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    kind = None
    async for line in lines:
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and kind == "snapshot":
            yield json.loads(line[5:])


async def test_rate_status_reports_the_callers_window_without_debiting(gateway: Gateway) -> None:
    """rate-status names the route's policy and remaining count, and asking costs nothing."""
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        await _burst(client, 2)
        first = (await client.get("/api/v1/rate-status")).json()
        second = (await client.get("/api/v1/rate-status", params={"path": "/api/info"})).json()
        assert await _burst(client, 3) == [200] * 3
        after = (await client.get("/api/v1/rate-status")).json()
    assert first["route"] == "api"
    assert first["limit"] == 5
    assert first["remaining"] == second["remaining"] == 3
    assert first["window_seconds"] == 10
    assert first["limits"][0]["policy"] == "per-ip"
    assert first["limited"] is False
    assert after["remaining"] == 0
    assert after["limited"] is True
    assert 0 < after["retry_after"] <= 10
    # Seed 003's dashboard reads these names.
    assert (first["current_count"], after["current_count"]) == (2, 5)
    assert (first["blocked"], after["blocked"]) == (False, True)
    assert 0 < after["ttl_seconds"] <= 10


async def test_rate_status_of_an_unrouted_path_and_bad_input(gateway: Gateway) -> None:
    """An unrouted path has no limits; a path without '/' is a 422 naming the problem."""
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        free = (await client.get("/api/v1/rate-status", params={"path": "/nowhere"})).json()
        bad = await client.get("/api/v1/rate-status", params={"path": "nowhere"})
        asset = await client.get("/dashboard/static/../../etc/passwd")
        unknown = await client.get("/dashboard/static/secret.py")
    assert free["route"] is None
    assert free["limits"] == []
    assert bad.status_code == 422
    assert "path" in bad.json()["detail"]
    assert asset.status_code == 404
    assert unknown.status_code == 404
    assert "secret.py" in unknown.json()["detail"]


async def test_api_metrics_is_flat_json_for_custom_panels(gateway: Gateway) -> None:
    """/api/metrics gives rates, totals and latency as plain JSON numbers."""
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        await _burst(client, 6)
        await gateway.component.tick()
        body = (await client.get("/api/metrics")).json()
    assert body["requests"] == 6
    assert body["limited"] == 1
    assert body["status"] == {"2xx": 5, "4xx": 1}
    assert set(body["latency_ms"]) == {"p50", "p95", "p99"}
    assert body["limiter"]["decisions"] >= 6


async def test_pages_and_assets_are_served_locally_under_a_strict_csp(gateway: Gateway) -> None:
    """Both pages load only same-origin assets, every one of which is served by Gatekeeper."""
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        for page in ("/dashboard", "/dashboard/waiting-room"):
            response = await client.get(page)
            assert response.status_code == 200
            assert "default-src 'self'" in response.headers["content-security-policy"]
            assert "http://" not in response.text
            assert "https://" not in response.text
            for asset in ("dashboard.css", "common.js"):
                assert f"/dashboard/static/{asset}" in response.text
                assert (await client.get(f"/dashboard/static/{asset}")).status_code == 200


async def test_pools_report_endpoint_health_once_bound(gateway: Gateway) -> None:
    """After a tick the gateway's pools report to the shared Metrics: each endpoint is healthy."""
    await gateway.component.tick()
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        s = _samples((await client.get("/metrics")).text)
    healthy = {
        dict(labels)["endpoint"]: value
        for (name, labels), value in s.items()
        if name == "gatekeeper_upstream_endpoint_healthy"
    }
    assert healthy == {f"127.0.0.1:{b.port}": 1.0 for b in gateway.backends}


async def test_access_lines_say_why_and_the_upstream_sees_the_request_id(gateway: Gateway) -> None:
    """A limited request's line names policy and key (RL); the upstream got the line's id."""
    await gateway.component.tick()  # binds the access log to the gateway state
    buffer = io.StringIO()
    access = gateway.component.obs.access_log
    access.stream = buffer
    access.enabled = True
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        first = await client.get("/api/info", headers={"X-Request-ID": "client-chosen-1"})
        echoed = first.json()["headers"]
        plain = (await client.get("/api/info")).json()["headers"]
        codes = await _burst(client, 5)
    access.flush()
    assert echoed["x-request-id"] == "client-chosen-1"
    assert len(plain["x-request-id"]) == 32
    assert codes == [200] * 3 + [429] * 2
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [line["term"] for line in lines] == ["--"] * 5 + ["RL"] * 2
    assert lines[0]["request_id"] == "client-chosen-1"
    assert lines[1]["request_id"] == plain["x-request-id"]
    assert lines[0]["upstream"] == "backends"
    limited = lines[-1]
    assert limited["policy"] == "per-ip"
    assert limited["limit_key"] == "ip:127.0.0.1"
    assert limited["status"] == 429
    assert "upstream" not in limited
    await gateway.component.tick()
    view = await gateway.component.latest()
    assert view["top_limited_ips"] == [["127.0.0.1", 2]] or view["top_limited_ips"] == [
        ("127.0.0.1", 2)
    ]
    assert view["totals"]["terminations"] == {"--": 5, "RL": 2}
    assert view["recent"][0]["term"] == "RL"


async def test_upstream_attempts_and_latency_reach_prometheus(gateway: Gateway) -> None:
    """Each forwarded request is one 'ok' attempt on its endpoint with an upstream latency."""
    await gateway.component.tick()  # binds the pools to the shared Metrics
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        assert await _burst(client, 4) == [200] * 4
        s = _samples((await client.get("/metrics")).text)
    attempts = {
        dict(labels)["endpoint"]: value
        for (name, labels), value in s.items()
        if name == "gatekeeper_upstream_attempts_total" and ("outcome", "ok") in labels
    }
    assert attempts == {f"127.0.0.1:{b.port}": 2.0 for b in gateway.backends}  # round robin
    count = frozenset({("upstream", "backends")})
    assert s[("gatekeeper_upstream_request_duration_seconds_count", count)] == 4


async def test_built_in_requests_get_access_lines_but_are_not_counted_as_traffic(
    gateway: Gateway,
) -> None:
    """/health, an ASGI endpoint and an unrouted path each get a line (no route, the
    X-Request-ID the client saw, built-in or no-route termination); the live statistics
    count routed traffic only."""
    await gateway.component.tick()
    buffer = io.StringIO()
    access = gateway.component.obs.access_log
    access.stream = buffer
    access.enabled = True
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        health = await client.get("/health")
        stats = await client.get("/stats")
        missing = await client.get("/nowhere-routed")
    access.flush()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    by_path = {line["path"]: line for line in lines}
    assert by_path["/health"]["status"] == health.status_code == 200
    assert by_path["/health"]["request_id"] == health.headers["x-request-id"]
    assert by_path["/stats"]["request_id"] == stats.headers["x-request-id"]
    assert by_path["/nowhere-routed"]["status"] == missing.status_code == 404
    # (The two-letter codes: B- built-in, RN no route; see Termination.code.)
    terms = [by_path[p]["term"] for p in ("/health", "/stats", "/nowhere-routed")]
    assert terms == ["B-", "B-", "RN"]
    assert all("route" not in line for line in lines)
    await gateway.component.tick()
    view = await gateway.component.latest()
    assert view["totals"]["terminations"] == {}
    assert view["recent"] == []
