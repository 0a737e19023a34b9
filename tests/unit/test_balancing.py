"""Balancing strategies: distribution, skipping unavailable endpoints, exclusion."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.upstream.balancing import (
    STRATEGIES,
    RequestContext,
    canonical_strategy,
    make_balancer,
)
from gatekeeper.gateway.upstream.endpoint import Endpoint

CTX = RequestContext("192.0.2.1")


def _endpoints(*weights: int) -> list[Endpoint]:
    return [Endpoint("10.2.0.1", 7000 + i, w) for i, w in enumerate(weights)]


def _count(strategy: str, eps: list[Endpoint], n: int) -> Counter[int]:
    balancer = make_balancer(strategy, eps, rng=random.Random(7))
    counts: Counter[int] = Counter()
    for i in range(n):
        ctx = RequestContext(f"198.51.{i // 256}.{i % 256}")
        ep = balancer.pick(ctx, 0.0, ())
        assert ep is not None
        counts[ep.port] += 1
    return counts


def test_round_robin_is_exact() -> None:
    """Round robin visits each endpoint in turn."""
    eps = _endpoints(1, 1, 1)
    balancer = make_balancer("round_robin", eps)
    picks = [balancer.pick(CTX, 0.0, ()) for _ in range(6)]
    assert picks == eps + eps


def test_smooth_weighted_round_robin_matches_nginx() -> None:
    """Weights 5,1,1 give nginx's smooth sequence a a b a c a a."""
    eps = _endpoints(5, 1, 1)
    balancer = make_balancer("weighted_round_robin", eps)
    picks = [balancer.pick(CTX, 0.0, ()) for _ in range(7)]
    a, b, c = eps
    assert picks == [a, a, b, a, c, a, a]


def test_weighted_three_to_one() -> None:
    """3:1 weights give 75% / 25% over 4000 picks."""
    counts = _count("weighted_round_robin", _endpoints(3, 1), 4000)
    assert counts == {7000: 3000, 7001: 1000}


def test_weighted_skips_unavailable_and_keeps_ratios() -> None:
    """With one endpoint down, the others keep their relative weights."""
    eps = _endpoints(4, 2, 1)
    eps[0].healthy = False
    counts = _count("weighted_round_robin", eps, 3000)
    assert 7000 not in counts
    assert counts[7001] == 2000
    assert counts[7002] == 1000


def test_least_connections_prefers_the_idle_endpoint() -> None:
    """The endpoint with the fewest in-flight requests per weight wins."""
    eps = _endpoints(1, 1, 2)
    eps[0].in_flight, eps[1].in_flight, eps[2].in_flight = 3, 1, 4
    balancer = make_balancer("least_connections", eps)
    assert balancer.pick(CTX, 0.0, ()) is eps[1]  # 1/1 < 4/2 < 3/1
    eps[1].in_flight = 5
    assert balancer.pick(CTX, 0.0, ()) is eps[2]


def test_least_connections_rotates_ties() -> None:
    """Idle endpoints share the traffic evenly."""
    assert _count("least_connections", _endpoints(1, 1, 1), 300) == {
        7000: 100,
        7001: 100,
        7002: 100,
    }


def test_p2c_never_picks_the_most_loaded_of_two() -> None:
    """With two endpoints, P2C always picks the less loaded one."""
    eps = _endpoints(1, 1)
    eps[0].in_flight = 10
    balancer = make_balancer("p2c", eps, rng=random.Random(1))
    assert all(balancer.pick(CTX, 0.0, ()) is eps[1] for _ in range(100))


def test_p2c_spreads_evenly_when_idle() -> None:
    """Idle P2C is uniform within 5 points."""
    counts = _count("p2c", _endpoints(1, 1, 1, 1), 4000)
    assert all(900 <= c <= 1100 for c in counts.values()), counts


def test_adaptive_avoids_the_slow_endpoint() -> None:
    """Peak-EWMA: one slow answer makes an endpoint lose the comparison at once."""
    eps = _endpoints(1, 1, 1)
    for ep in eps:
        ep.observe_latency(0.002, 0.0, 10.0)
    eps[1].observe_latency(0.200, 0.0, 10.0)  # the peak replaces the estimate
    counts = Counter(
        make_balancer("adaptive", eps, rng=random.Random(3)).pick(CTX, 0.0, ()) for _ in range(900)
    )
    assert counts[eps[1]] == 0  # it loses every comparison it takes part in


def test_adaptive_retries_a_slow_endpoint_after_decay() -> None:
    """The latency estimate decays with time, so a once-slow endpoint gets traffic again."""
    eps = _endpoints(1, 1)
    eps[0].observe_latency(0.010, 0.0, 10.0)
    eps[1].observe_latency(0.200, 0.0, 10.0)
    balancer = make_balancer("adaptive", eps, rng=random.Random(3))
    assert balancer.pick(CTX, 1.0, ()) is eps[0]
    eps[0].in_flight = 50  # the fast one is now busy: latency x (in_flight + 1)
    assert balancer.pick(CTX, 1.0, ()) is eps[1]


def test_ewma_falls_slowly_after_a_peak() -> None:
    """A faster sample pulls the estimate down by 1 - exp(-dt/decay), not all at once."""
    ep = Endpoint("10.0.0.1", 1)
    ep.observe_latency(0.100, 0.0, 10.0)
    ep.observe_latency(0.010, 1.0, 10.0)
    assert 0.090 < ep.latency(1.0, 10.0) < 0.100


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_skips_unavailable_endpoints(strategy: str) -> None:
    """Unhealthy, ejected and open-circuit endpoints never get picked."""
    eps = _endpoints(1, 1, 1, 1)
    eps[0].healthy = False
    eps[1].ejected_until = 100.0
    for _ in range(eps[2].breaker.config.consecutive_failures):
        eps[2].breaker.record(0.0, ok=False)
    counts = _count(strategy, eps, 200)
    assert set(counts) == {7003}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_honours_exclude(strategy: str) -> None:
    """An endpoint already tried by this request is not picked again."""
    eps = _endpoints(1, 1)
    balancer = make_balancer(strategy, eps)
    for i in range(50):
        ctx = RequestContext(f"203.0.113.{i}")
        first = balancer.pick(ctx, 0.0, ())
        second = balancer.pick(ctx, 0.0, frozenset({first}))
        assert second is not None
        assert second is not first
        assert balancer.pick(ctx, 0.0, frozenset(eps)) is None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_returns_none_when_all_are_down(strategy: str) -> None:
    """No available endpoint: None (the pool turns it into NoHealthyUpstream)."""
    eps = _endpoints(1, 2, 3)
    for ep in eps:
        ep.healthy = False
    assert make_balancer(strategy, eps).pick(CTX, 0.0, ()) is None


def test_aliases_and_unknown_names() -> None:
    """The seeds' names map to strategies; unknown names list the valid ones."""
    assert canonical_strategy("weighted") == "weighted_round_robin"
    assert canonical_strategy("IP-Hash") == "ring_hash"
    assert canonical_strategy("least-connections") == "least_connections"
    with pytest.raises(ConfigurationError, match="one of: round_robin"):
        canonical_strategy("fastest")


@pytest.mark.parametrize("strategy", ["round_robin", "weighted_round_robin"])
def test_retries_do_not_take_first_attempts_turns(strategy: str) -> None:
    """With two endpoints, retrying every pick of the first still leaves it half the picks."""
    eps = _endpoints(1, 1)
    balancer = make_balancer(strategy, eps)
    firsts = []
    for _ in range(10):
        first = balancer.pick(CTX, 0.0, ())
        assert first is not None
        firsts.append(first)
        if first is eps[0]:
            assert balancer.pick(CTX, 0.0, frozenset({first})) is eps[1]
    assert firsts.count(eps[0]) == 5
