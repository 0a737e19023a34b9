"""Balancing strategies through the real gateway, against real upstreams on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_resilience_upstreams import (
    ADMIN,
    Upstream,
    gateway_config,
    running_gateway,
    start_upstreams,
)


@pytest.fixture
async def upstreams() -> AsyncIterator[list[Upstream]]:
    started = await start_upstreams("b1", "b2", "b3")
    yield started
    for upstream in started:
        await upstream.stop()


async def test_weighted_three_to_one(tmp_path: Path) -> None:
    """Weights 3:1 send 75% +- 5% of 4000 requests to the heavy endpoint."""
    heavy, light = await start_upstreams("heavy", "light")
    try:
        config = gateway_config(
            [heavy.url, light.url], strategy="weighted_round_robin", weights=[3, 1]
        )
        async with running_gateway(config, tmp_path) as gateway:
            counts = await gateway.spread(4000, concurrency=8)
        assert counts["heavy"] + counts["light"] == 4000
        assert abs(counts["heavy"] / 4000 - 0.75) <= 0.05, counts
        assert heavy.requests == counts["heavy"]
    finally:
        await heavy.stop()
        await light.stop()


@pytest.mark.parametrize(
    "strategy", ["round_robin", "least_connections", "p2c", "adaptive", "ring_hash", "maglev"]
)
async def test_even_strategies_spread_evenly(
    strategy: str, upstreams: list[Upstream], tmp_path: Path
) -> None:
    """With equal weights and equal backends each gets a third (+- 8 points) of 900 requests
    (adaptive: at least 10% each, as it follows measured latency).

    Hash strategies hash on a header here, one value per request, so the keys vary."""
    config = gateway_config(
        [u.url for u in upstreams], strategy=strategy, upstream={"hash_on": "header:x-user"}
    )
    async with running_gateway(config, tmp_path) as gateway:
        if strategy in ("ring_hash", "maglev"):
            client = gateway.client()
            counts: dict[str, int] = {}
            for i in range(900):
                _, headers, _ = await client.get("/api/x", {"x-user": f"user-{i}"})
                counts[headers["x-backend"]] = counts.get(headers["x-backend"], 0) + 1
        else:
            counts = await gateway.spread(900, concurrency=6)
    assert sorted(counts) == ["b1", "b2", "b3"], counts
    for name in ("b1", "b2", "b3"):
        if strategy == "adaptive":
            # Adaptive follows measured latency, which scheduling noise on a shared machine
            # skews; it must still use every backend substantially.
            assert counts[name] / 900 >= 0.1, (strategy, counts)
        else:
            assert abs(counts[name] / 900 - 1 / 3) <= 0.08, (strategy, counts)


async def test_adaptive_avoids_a_slow_backend(upstreams: list[Upstream], tmp_path: Path) -> None:
    """Peak-EWMA P2C sends a backend that answers 30 ms slower well under its even share."""
    upstreams[0].delay = 0.03
    config = gateway_config([u.url for u in upstreams], strategy="adaptive")
    async with running_gateway(config, tmp_path) as gateway:
        counts = await gateway.spread(600, concurrency=6)
    assert counts["b1"] / 600 < 0.15, counts


async def test_least_connections_avoids_a_busy_backend(
    upstreams: list[Upstream], tmp_path: Path
) -> None:
    """Least connections routes around a backend whose requests pile up."""
    upstreams[1].delay = 0.05
    config = gateway_config([u.url for u in upstreams], strategy="least_connections")
    async with running_gateway(config, tmp_path) as gateway:
        counts = await gateway.spread(600, concurrency=6)
    assert counts["b2"] / 600 < 0.2, counts


@pytest.mark.parametrize("strategy", ["ring_hash", "maglev"])
async def test_hash_on_cookie_pins_a_session(
    strategy: str, upstreams: list[Upstream], tmp_path: Path
) -> None:
    """The same session cookie always reaches the same backend."""
    config = gateway_config(
        [u.url for u in upstreams], strategy=strategy, upstream={"hash_on": "cookie:sid"}
    )
    async with running_gateway(config, tmp_path) as gateway:
        client = gateway.client()
        backends = {
            (await client.get("/api/x", {"cookie": f"theme=dark; sid=abc{i}"}))[1]["x-backend"]
            for i in range(50)
        }
        per_session = [
            {
                (await client.get("/api/x", {"cookie": f"sid=abc{s}"}))[1]["x-backend"]
                for _ in range(10)
            }
            for s in range(5)
        ]
    assert all(len(seen) == 1 for seen in per_session)
    # Fifty sessions do not all land on one backend. (Five did in 1 run of 81 or more: the
    # placement follows the upstreams' random ports.)
    assert len(backends) >= 2


async def test_change_strategy_at_run_time(upstreams: list[Upstream], tmp_path: Path) -> None:
    """POST /change_strategy switches the pool live; /stats shows it; a bad name is a 422."""
    config = gateway_config([u.url for u in upstreams], strategy="round_robin")
    async with running_gateway(config, tmp_path) as gateway:
        base = f"http://127.0.0.1:{gateway.port}"
        auth = {"authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=base) as http:
            response = await http.post(
                "/change_strategy", json={"strategy": "ip_hash"}, headers=auth
            )
            assert response.status_code == 200, response.text
            stats = (await http.get("/stats")).json()["pools"]["backends"]
            assert stats["strategy"] == "ring_hash"
            assert stats["hash_on"] == "ip"
            counts = await gateway.spread(60, concurrency=3)
            assert len(counts) == 1  # one client IP, one backend
            bad = await http.post("/change_strategy", json={"strategy": "fastest"}, headers=auth)
            assert bad.status_code == 422
            assert "unknown balancing strategy" in bad.text
            assert gateway.pool().strategy == "ring_hash"
