"""Retries through the real gateway: on another endpoint, within the retry budget."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_resilience_upstreams import (
    gateway_config,
    running_gateway,
    start_upstreams,
)

# Keep outlier detection and the breaker out of the way: the budget alone must limit retries.
NO_EJECTION = {
    "outlier": {"consecutive_failures": 100000},
    "breaker": {"consecutive_failures": 100000, "min_requests": 100000},
}


async def test_retry_goes_to_another_endpoint(tmp_path: Path) -> None:
    """A 503 from one endpoint is retried once on the other, and the client sees a 200."""
    bad, good = await start_upstreams("bad", "good")
    bad.status = 503
    try:
        config = gateway_config(
            [bad.url, good.url],
            upstream=NO_EJECTION,
            route={"retry": {"attempts": 2, "on_status": [503]}},
        )
        async with running_gateway(config, tmp_path) as gateway:
            counts = await gateway.spread(20, concurrency=1)
        assert counts == {"good": 20}
        assert bad.requests == 10  # its first attempts were retried on `good`...
        assert good.requests == 20  # ...and retries did not take first attempts' turns
    finally:
        await bad.stop()
        await good.stop()


async def test_retry_budget_caps_extra_load(tmp_path: Path) -> None:
    """Against a failing backend, retries add at most 20% to the requests sent upstream."""
    bad, good = await start_upstreams("bad", "good")
    bad.status = 503
    try:
        config = gateway_config(
            [bad.url, good.url],
            upstream={
                **NO_EJECTION,
                "retry_budget": {"ratio": 0.2, "min_per_second": 0, "window": 60},
            },
            route={"retry": {"attempts": 3, "on_status": [503]}},
        )
        async with running_gateway(config, tmp_path) as gateway:
            counts = await gateway.spread(500, concurrency=4)
            budget = gateway.pool().snapshot()["retry_budget"]
        upstream_requests = bad.requests + good.requests
        retries = upstream_requests - 500
        assert retries <= 0.2 * 500, (retries, counts)
        assert retries >= 0.2 * 500 - 2  # the budget was used, not ignored
        assert counts["503"] == 500 - counts["good"]
        assert counts["503"] >= 250 - 0.2 * 500 - 2  # some first-attempt failures got no retry
        assert budget["denied"] > 0
        assert budget["window_retries"] == retries
    finally:
        await bad.stop()
        await good.stop()


async def test_non_idempotent_requests_are_not_retried(tmp_path: Path) -> None:
    """A POST that fails with 503 is not sent again."""
    bad, good = await start_upstreams("bad", "good")
    bad.status = 503
    try:
        config = gateway_config(
            [bad.url, good.url],
            upstream=NO_EJECTION,
            route={"retry": {"attempts": 3, "on_status": [503]}},
        )
        async with running_gateway(config, tmp_path) as gateway:
            client = gateway.client()
            statuses = [(await client.request("POST", "/api/x", body=b"{}"))[0] for _ in range(10)]
        assert statuses.count(503) == 5
        assert bad.requests + good.requests == 10
    finally:
        await bad.stop()
        await good.stop()
