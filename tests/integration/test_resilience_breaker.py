"""Circuit breaker transitions through the real gateway (time from a FakeClock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatekeeper.testing import FakeClock
from tests.integration.test_resilience_upstreams import (
    Gateway,
    Upstream,
    gateway_config,
    running_gateway,
    start_upstreams,
)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Upstream, Upstream, FakeClock]]:
    bad, good = await start_upstreams("bad", "good")
    bad.status = 503
    config = gateway_config(
        [bad.url, good.url],
        upstream={
            "breaker": {"consecutive_failures": 3, "open_for": 30, "half_open_probes": 1},
            "outlier": {"consecutive_failures": 1000},
        },
        route={"retry": {"attempts": 1}},
    )
    try:
        async with running_gateway(config, tmp_path) as gateway:
            clock = FakeClock()
            gateway.pool().clock = clock
            yield gateway, bad, good, clock
    finally:
        await bad.stop()
        await good.stop()


def _breaker(gateway: Gateway) -> dict[str, object]:
    state: dict[str, object] = gateway.pool().snapshot()["endpoints"][0]["breaker"]
    return state


async def test_closed_open_half_open_closed(
    pair: tuple[Gateway, Upstream, Upstream, FakeClock],
) -> None:
    """Three 503s open the breaker, traffic avoids the backend, one probe after open_for
    finds it fixed and closes the breaker."""
    gateway, bad, _, clock = pair
    first = await gateway.spread(6, concurrency=1)
    assert first == {"503": 3, "good": 3}
    assert _breaker(gateway)["state"] == "open"

    avoided = await gateway.spread(40, concurrency=2)
    assert avoided == {"good": 40}
    assert bad.requests == 3

    clock.advance(29)
    assert (await gateway.spread(10, concurrency=1)) == {"good": 10}
    clock.advance(1)
    bad.status = 200
    assert _breaker(gateway)["state"] == "half_open"
    await gateway.spread(2, concurrency=1)  # round robin: one of the two goes to the probe
    assert bad.requests == 4
    assert _breaker(gateway)["state"] == "closed"
    again = await gateway.spread(40, concurrency=2)
    assert again == {"bad": 20, "good": 20}


async def test_failed_probe_reopens(pair: tuple[Gateway, Upstream, Upstream, FakeClock]) -> None:
    """A probe that fails in half-open opens the breaker for another open_for."""
    gateway, bad, _, clock = pair
    await gateway.spread(6, concurrency=1)
    clock.advance(30)
    await gateway.spread(2, concurrency=1)
    assert bad.requests == 4
    breaker = _breaker(gateway)
    assert breaker["state"] == "open"
    assert breaker["trips"] == 2
    assert (await gateway.spread(20, concurrency=2)) == {"good": 20}
    assert bad.requests == 4


async def test_error_ratio_trips_the_breaker(tmp_path: Path) -> None:
    """A backend failing every other request trips on the ratio, not on consecutive failures."""
    flaky, good = await start_upstreams("flaky", "good")
    calls = 0
    config = gateway_config(
        [flaky.url, good.url],
        upstream={
            "breaker": {
                "consecutive_failures": 100,
                "error_ratio": 0.5,
                "min_requests": 10,
                "window": 10,
            },
            "outlier": {"consecutive_failures": 1000},
        },
        route={"retry": {"attempts": 1}},
    )
    try:
        async with running_gateway(config, tmp_path) as gateway:
            gateway.pool().clock = FakeClock()
            client = gateway.client()
            # flaky answers 503, 200, 503, ...: never two failures in a row; the 11th answer
            # makes 6 failures of 11 >= 50% with more than min_requests in the window.
            while flaky.requests < 11 and calls < 100:
                calls += 1
                flaky.status = 503 if flaky.requests % 2 == 0 else 200
                await client.get("/api/x")
            assert _breaker(gateway)["state"] == "open"
            sent = flaky.requests
            assert (await gateway.spread(20, concurrency=2)) == {"good": 20}
            assert flaky.requests == sent
    finally:
        await flaky.stop()
        await good.stop()
