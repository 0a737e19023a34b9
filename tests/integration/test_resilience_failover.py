"""Failover and recovery through the real gateway: active checks, outlier ejection, hashing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatekeeper.testing import FakeClock
from tests.integration.test_resilience_upstreams import (
    BackendProcess,
    Gateway,
    eventually,
    gateway_config,
    running_gateway,
    start_upstreams,
)

FAST_CHECKS = {
    "path": "/health",
    "interval": 0.05,
    "timeout": 0.5,
    "healthy_threshold": 2,
    "unhealthy_threshold": 2,
}


@pytest.fixture
def processes() -> Iterator[list[BackendProcess]]:
    started = [BackendProcess(f"p{i}") for i in (1, 2, 3)]
    try:
        for process in started:
            process.start()
        yield started
    finally:
        for process in started:
            process.kill()


def _healthy(gateway: Gateway, port: int) -> bool:
    for endpoint in gateway.pool().snapshot()["endpoints"]:
        if endpoint["address"].endswith(f":{port}"):
            return bool(endpoint["healthy"])
    raise AssertionError(f"no endpoint on port {port}")


async def test_failover_when_a_backend_dies_and_recovery_when_it_returns(
    processes: list[BackendProcess], tmp_path: Path
) -> None:
    """Kill a backend process: clients keep getting 200s, it leaves; restart it: it returns."""
    config = gateway_config(
        [p.url for p in processes], upstream={"health": FAST_CHECKS}, route={"retry": {}}
    )
    async with running_gateway(config, tmp_path) as gateway:
        before = await gateway.spread(90, concurrency=3)
        assert set(before) == {"p1", "p2", "p3"}

        processes[1].kill()
        # Between the kill and the checks noticing it, connect errors are retried elsewhere.
        during = await gateway.spread(60, concurrency=3)
        assert set(during) <= {"p1", "p3"}, during
        await eventually(lambda: not _healthy(gateway, processes[1].port), what="p2 marked down")
        after = await gateway.spread(150, concurrency=3)
        assert set(after) == {"p1", "p3"}, after
        assert gateway.pool().snapshot()["endpoints"][1]["last_check_error"]

        processes[1].start()  # same port
        await eventually(lambda: _healthy(gateway, processes[1].port), what="p2 back up")
        recovered = await gateway.spread(150, concurrency=3)
        assert set(recovered) == {"p1", "p2", "p3"}, recovered
        assert abs(recovered["p2"] - 50) <= 15, recovered


async def test_every_backend_down_is_a_503_json(tmp_path: Path) -> None:
    """With every endpoint unhealthy the gateway answers 503 with a JSON body, not a 500."""
    (upstream,) = await start_upstreams("only")
    try:
        upstream.health_status = 500
        config = gateway_config([upstream.url], upstream={"health": FAST_CHECKS})
        async with running_gateway(config, tmp_path) as gateway:
            await eventually(lambda: not _healthy(gateway, upstream.port), what="marked down")
            status, headers, body = await gateway.client().get("/api/x")
            assert status == 503
            assert headers["content-type"].endswith("json"), headers
            assert json.loads(body)["error"] == "no_healthy_upstream"
            assert upstream.requests == 0
    finally:
        await upstream.stop()


async def test_outlier_ejection_and_return(tmp_path: Path) -> None:
    """Consecutive 5xx eject a backend for base_ejection_time; it returns when that passes."""
    upstreams = await start_upstreams("o1", "o2", "o3")
    bad = upstreams[0]
    bad.status = 500
    try:
        config = gateway_config(
            [u.url for u in upstreams],
            upstream={
                "outlier": {"consecutive_failures": 3, "base_ejection_time": 30},
                "breaker": {"consecutive_failures": 1000, "min_requests": 100000},
            },
            route={"retry": {"attempts": 1}},
        )
        async with running_gateway(config, tmp_path) as gateway:
            clock = FakeClock()
            gateway.pool().clock = clock
            first = await gateway.spread(30, concurrency=1)
            assert first["500"] == 3  # the third 5xx ejects it
            assert bad.requests == 3
            later = await gateway.spread(100, concurrency=2)
            assert set(later) == {"o2", "o3"}, later
            stats = gateway.pool().snapshot()
            assert stats["ejected"] == 1
            assert stats["endpoints"][0]["ejected"]

            bad.status = 200
            clock.advance(30)
            back = await gateway.spread(90, concurrency=3)
            assert set(back) == {"o1", "o2", "o3"}, back
    finally:
        for upstream in upstreams:
            await upstream.stop()


async def test_ejection_never_exceeds_the_configured_share(tmp_path: Path) -> None:
    """With every backend failing, at most max_ejection_percent of the pool is ejected."""
    upstreams = await start_upstreams("e1", "e2", "e3", "e4")
    for upstream in upstreams:
        upstream.status = 503
    try:
        config = gateway_config(
            [u.url for u in upstreams],
            upstream={
                "outlier": {"consecutive_failures": 2, "max_ejection_percent": 50},
                "breaker": {"consecutive_failures": 1000, "min_requests": 100000},
            },
            route={"retry": {"attempts": 1}},
        )
        async with running_gateway(config, tmp_path) as gateway:
            counts = await gateway.spread(100, concurrency=2)
            assert counts == {"503": 100}  # the pool keeps serving what it has
            assert gateway.pool().snapshot()["ejected"] == 2
    finally:
        for upstream in upstreams:
            await upstream.stop()


@pytest.mark.parametrize("strategy", ["ring_hash", "maglev"])
async def test_only_the_dead_backends_keys_move(strategy: str, tmp_path: Path) -> None:
    """Consistent hashing through the gateway: when a backend dies only its users move."""
    upstreams = await start_upstreams("h1", "h2", "h3", "h4")
    try:
        config = gateway_config(
            [u.url for u in upstreams],
            strategy=strategy,
            upstream={"hash_on": "header:x-user", "health": FAST_CHECKS},
        )
        async with running_gateway(config, tmp_path) as gateway:
            client = gateway.client()
            users = [f"user-{i}" for i in range(200)]

            async def owners() -> dict[str, str]:
                return {
                    u: (await client.get("/api/x", {"x-user": u}))[1]["x-backend"] for u in users
                }

            before = await owners()
            await upstreams[2].stop()
            await eventually(lambda: not _healthy(gateway, upstreams[2].port), what="h3 down")
            after = await owners()
        moved = {u for u in users if before[u] != after[u]}
        assert moved == {u for u in users if before[u] == "h3"}
        assert moved  # h3 owned some users
    finally:
        for upstream in upstreams:
            await upstream.stop()
