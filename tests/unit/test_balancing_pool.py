"""UpstreamPool: the rules working together behind the proxy's calls."""

from __future__ import annotations

import random

import pytest

from gatekeeper.errors import ConfigurationError, NoHealthyUpstream, QueueFull
from gatekeeper.gateway.config import UpstreamConfig
from gatekeeper.gateway.upstream.balancing import RequestContext
from gatekeeper.gateway.upstream.breaker import BreakerConfig, BreakerState
from gatekeeper.gateway.upstream.endpoint import Endpoint
from gatekeeper.gateway.upstream.outlier import OutlierConfig
from gatekeeper.gateway.upstream.pool import UpstreamPool, pool_from_config
from gatekeeper.gateway.upstream.retry import RetryBudgetConfig
from gatekeeper.testing import FakeClock

CTX = RequestContext("192.0.2.7")


def _pool(clock: FakeClock, n: int = 3, **kwargs: object) -> UpstreamPool:
    eps = [Endpoint("10.3.0.1", 6000 + i) for i in range(n)]
    return UpstreamPool("api", eps, clock=clock, rng=random.Random(5), **kwargs)  # type: ignore[arg-type]


def _send(pool: UpstreamPool, status: int | None, ep: Endpoint | None = None) -> Endpoint:
    ep = ep or pool.pick(CTX)
    pool.on_start(ep)
    pool.on_finish(ep, status=status, error=status is None or status >= 500, latency=0.01)
    return ep


def test_on_start_and_on_finish_track_in_flight(fake_clock: FakeClock) -> None:
    """In-flight goes up on start and back down on finish; counters follow."""
    pool = _pool(fake_clock)
    ep = pool.pick(CTX)
    pool.on_start(ep)
    assert ep.in_flight == 1
    pool.on_finish(ep, status=500, error=True, latency=0.02)
    assert ep.in_flight == 0
    assert ep.requests == 1
    assert ep.failures == 1


def test_breaker_trips_through_the_pool_and_recovers(fake_clock: FakeClock) -> None:
    """Failures open the endpoint's breaker, traffic avoids it, a probe closes it again."""
    pool = _pool(
        fake_clock,
        breaker=BreakerConfig(consecutive_failures=2, open_for=10),
        outlier=OutlierConfig(enabled=False),
    )
    bad = pool.endpoints[0]
    _send(pool, 503, bad)
    _send(pool, 503, bad)
    assert bad.breaker.state is BreakerState.OPEN
    assert bad not in {pool.pick(CTX) for _ in range(30)}
    fake_clock.advance(10)
    picks = [pool.pick(CTX) for _ in range(3)]
    assert bad in picks  # half-open lets one probe through
    _send(pool, 200, bad)
    assert bad.breaker.state is BreakerState.CLOSED


def test_outlier_ejection_through_the_pool(fake_clock: FakeClock) -> None:
    """Consecutive connect failures eject; the endpoint returns after the ejection time."""
    pool = _pool(
        fake_clock,
        outlier=OutlierConfig(consecutive_connect_failures=2, base_ejection_time=5),
        breaker=BreakerConfig(enabled=False),
    )
    bad = pool.endpoints[1]
    _send(pool, None, bad)
    _send(pool, None, bad)
    assert bad not in {pool.pick(CTX) for _ in range(30)}
    assert pool.snapshot()["ejected"] == 1
    fake_clock.advance(5)
    assert bad in {pool.pick(CTX) for _ in range(30)}


def test_no_available_endpoint_raises(fake_clock: FakeClock) -> None:
    """Every endpoint down (or already tried) is NoHealthyUpstream."""
    pool = _pool(fake_clock, n=2)
    with pytest.raises(NoHealthyUpstream, match="2 already tried"):
        pool.pick(CTX, frozenset(pool.endpoints))
    for ep in pool.endpoints:
        ep.healthy = False
    with pytest.raises(NoHealthyUpstream, match="'api'"):
        pool.pick(CTX)
    assert pool.no_healthy == 2


def test_first_attempts_fill_the_retry_budget(fake_clock: FakeClock) -> None:
    """Picks without exclusions (first attempts) fill the budget; retries draw 20% of them."""
    pool = _pool(fake_clock, retry=RetryBudgetConfig(ratio=0.2, min_per_second=0))
    for _ in range(10):
        first = _send(pool, 503)
        pool.pick(CTX, frozenset({first}))  # a retry's pick deposits nothing
    assert pool.retry_budget.snapshot()["window_requests"] == 10
    assert [pool.retry_budget.allow_retry() for _ in range(3)] == [True, True, False]


def test_clock_can_be_swapped(fake_clock: FakeClock) -> None:
    """Setting pool.clock moves every time-based rule, the retry budget included."""
    pool = _pool(FakeClock(), retry=RetryBudgetConfig(ratio=0.0, min_per_second=0.1, window=10))
    pool.clock = fake_clock
    assert pool.retry_budget.allow_retry()
    assert not pool.retry_budget.allow_retry()
    fake_clock.advance(11)
    assert pool.retry_budget.allow_retry()


def test_set_strategy_at_run_time(fake_clock: FakeClock) -> None:
    """The strategy changes live; an unknown one is refused and the old one stays."""
    pool = _pool(fake_clock)
    pool.set_strategy("maglev", hash_on="header:x-user")
    assert pool.strategy == "maglev"
    assert pool.snapshot()["hash_on"] == "header:x-user"
    ctx = RequestContext("1.1.1.1", [("x-user", "carol")])
    assert len({pool.pick(ctx) for _ in range(20)}) == 1
    with pytest.raises(ConfigurationError, match="unknown balancing strategy"):
        pool.set_strategy("fastest")
    assert pool.strategy == "maglev"
    pool.set_strategy("ip_hash")
    assert pool.strategy == "ring_hash"
    assert pool.snapshot()["hash_on"] == "ip"


def test_snapshot_shape(fake_clock: FakeClock) -> None:
    """The snapshot names strategy, endpoints with health and breaker, queue and budget."""
    pool = _pool(fake_clock, max_concurrency=4)
    snap = pool.snapshot()
    assert snap["strategy"] == "round_robin"
    assert [e["address"] for e in snap["endpoints"]] == [e.address for e in pool.endpoints]
    assert snap["endpoints"][0]["breaker"]["state"] == "closed"
    assert snap["admission"]["max_concurrency"] == 4
    assert snap["available"] == 3


def test_duplicate_or_missing_endpoints_are_refused(fake_clock: FakeClock) -> None:
    """A pool needs distinct endpoints."""
    with pytest.raises(ConfigurationError, match="twice"):
        UpstreamPool("x", [Endpoint("h", 1), Endpoint("h", 1)])
    with pytest.raises(ConfigurationError, match="at least one"):
        UpstreamPool("x", [])
    with pytest.raises(ConfigurationError, match="weight"):
        Endpoint("h", 1, weight=0)


def test_bad_strategy_or_hash_on_names_the_upstream() -> None:
    """A pool built with an unknown strategy or hash_on says which upstream is wrong."""
    with pytest.raises(ConfigurationError, match=r"upstream 'api': unknown balancing strategy"):
        UpstreamPool("api", [Endpoint("h", 1)], "fastest")
    with pytest.raises(ConfigurationError, match=r"upstream 'api': hash_on 'query:x'"):
        UpstreamPool("api", [Endpoint("h", 1)], "maglev", hash_on="query:x")


def test_pool_from_the_gateway_configuration() -> None:
    """pool_from_config reads an upstreams: entry of the gateway's YAML model."""
    config = UpstreamConfig.model_validate(
        {
            "endpoints": ["http://127.0.0.1:7001", {"url": "http://127.0.0.1:7002", "weight": 3}],
            "strategy": "weighted",
            "health": {"path": "/ping", "interval": 2},
            "breaker": {"consecutive_failures": 4},
            "max_concurrency": 8,
            "queue": {"size": 3, "timeout": 2},
        }
    )
    pool = pool_from_config("api", config)
    assert pool.strategy == "weighted_round_robin"
    assert [e.weight for e in pool.endpoints] == [1, 3]
    assert pool.health is not None
    assert pool.health.config.path == "/ping"
    assert pool.breaker_config.consecutive_failures == 4
    assert pool.admission_control.snapshot()["queue_size"] == 3


async def test_transitions_reach_the_prometheus_metrics(fake_clock: FakeClock) -> None:
    """Breaker transitions, ejections, health changes and queue waits land in the real
    Metrics registry under the pool's name and the endpoint's address."""
    from gatekeeper.gateway.upstream.admission import QueueConfig
    from gatekeeper.gateway.upstream.health import HealthCheckConfig
    from gatekeeper.observability.metrics import Metrics

    metrics = Metrics()
    pool = _pool(
        fake_clock,
        breaker=BreakerConfig(consecutive_failures=2, open_for=5),
        outlier=OutlierConfig(consecutive_failures=2, base_ejection_time=5),
        health=HealthCheckConfig(unhealthy_threshold=1),
        max_concurrency=1,
        queue=QueueConfig(size=0, timeout=1),
        metrics=metrics,
    )
    ep = pool.endpoints[0]
    labels = {"upstream": "api", "endpoint": ep.address}

    def value(name: str, **extra: str) -> float | None:
        return metrics.registry.get_sample_value(name, {**labels, **extra})

    assert value("gatekeeper_upstream_endpoint_healthy") == 1
    _send(pool, 503, ep)
    _send(pool, 503, ep)
    assert value("gatekeeper_upstream_breaker_state") == 2  # open
    assert value("gatekeeper_upstream_breaker_transitions_total", state="open") == 1
    assert value("gatekeeper_upstream_ejections_total") == 1
    assert pool.health is not None
    pool.health.record(ep, False, "refused")
    assert value("gatekeeper_upstream_endpoint_healthy") == 0
    async with pool.admission():
        with pytest.raises(QueueFull):
            await pool.admission_control.acquire()
    rejected = metrics.registry.get_sample_value(
        "gatekeeper_admission_rejections_total", {"upstream": "api", "reason": "full"}
    )
    assert rejected == 1


def test_cancelled_attempt_releases_without_judging(fake_clock: FakeClock) -> None:
    """on_cancel gives back in-flight and a half-open probe slot, and counts no outcome."""
    pool = _pool(fake_clock, n=1, breaker=BreakerConfig(consecutive_failures=1, open_for=5))
    ep = pool.endpoints[0]
    _send(pool, 503, ep)
    fake_clock.advance(5)
    probe = pool.pick(CTX)
    pool.on_start(probe)
    with pytest.raises(NoHealthyUpstream):
        pool.pick(CTX)  # the single probe slot is taken
    pool.on_cancel(probe)
    assert ep.in_flight == 0
    assert ep.breaker.state is BreakerState.HALF_OPEN
    assert pool.pick(CTX) is ep
