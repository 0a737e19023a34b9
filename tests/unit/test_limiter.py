"""The Limiter on the real memory store with a fake clock: decisions, cache, shadow, leases."""

from __future__ import annotations

import asyncio

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.decision import Decision
from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.policy import Algorithm, Check, Policy
from gatekeeper.limits.storage import storage_from_url
from gatekeeper.testing import FakeClock
from tests.unit.limiter_helpers import RecordingStorage


def memory_limiter(clock: FakeClock, **options: object) -> Limiter:
    return Limiter(storage_from_url("memory://", clock=clock), clock=clock, **options)  # type: ignore[arg-type]


async def test_hit_admits_up_to_the_limit_then_denies_with_retry_after(
    fake_clock: FakeClock,
) -> None:
    """5/second admits five hits, denies the sixth with Retry-After 1, and admits after it."""
    limiter = memory_limiter(fake_clock)
    policy = Policy.parse("p", "5/second", algorithm="fixed_window")
    decisions = [await limiter.hit(policy, "k") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    denied = decisions[-1]
    assert denied.policy == "p"
    assert denied.remaining == 0
    assert denied.retry_after >= 1
    fake_clock.advance(denied.retry_after)
    assert (await limiter.hit(policy, "k")).allowed


async def test_decide_is_all_or_nothing_across_policies(fake_clock: FakeClock) -> None:
    """When one policy of a request denies, the other policy is not debited."""
    limiter = memory_limiter(fake_clock, over_limit_cache=False)
    wide = Policy.parse("wide", "100/minute")
    narrow = Policy.parse("narrow", "1/minute")
    first = await limiter.decide([Check(wide, "k"), Check(narrow, "k")])
    assert first.allowed
    for _ in range(5):
        denied = await limiter.decide([Check(wide, "k"), Check(narrow, "k")])
        assert not denied.allowed
        assert denied.policy == "narrow"
    left = await limiter.peek(wide, "k")
    assert left.remaining == 99  # only the one admitted request was debited


async def test_over_limit_cache_answers_without_the_store_until_retry_time(
    fake_clock: FakeClock,
) -> None:
    """After a denial, the same key is denied locally (no store call) until retry_after ends."""
    storage = RecordingStorage(fake_clock)
    limiter = Limiter(storage, clock=fake_clock)
    policy = Policy.parse("p", "2/second", algorithm="sliding_log")
    for _ in range(3):
        await limiter.hit(policy, "k")
    calls = len(storage.calls)
    first_denial = await limiter.hit(policy, "k")
    assert not first_denial.allowed
    assert len(storage.calls) == calls  # answered by the cache
    fake_clock.advance(0.25)
    later = await limiter.hit(policy, "k")
    assert not later.allowed
    assert len(storage.calls) == calls
    assert later.binding.retry_after == pytest.approx(first_denial.binding.retry_after - 0.25)
    assert limiter.stats.over_limit_hits == 2
    fake_clock.advance(later.binding.retry_after)
    assert (await limiter.hit(policy, "k")).allowed
    assert len(storage.calls) == calls + 1
    await limiter.aclose()


async def test_over_limit_cache_lets_cheaper_hits_ask_the_store(fake_clock: FakeClock) -> None:
    """A denial of cost 5 does not stop a hit of cost 1 from being decided by the store."""
    storage = RecordingStorage(fake_clock)
    limiter = Limiter(storage, clock=fake_clock)
    policy = Policy.parse("p", "3/second")
    assert not (await limiter.hit(policy, "k", cost=5)).allowed
    calls = len(storage.calls)
    assert (await limiter.hit(policy, "k", cost=1)).allowed
    assert len(storage.calls) == calls + 1
    await limiter.aclose()


async def test_over_limit_cache_never_holds_concurrency_denials(fake_clock: FakeClock) -> None:
    """A full concurrency limit is asked again each time: a release may free a slot any moment."""
    storage = RecordingStorage(fake_clock)
    limiter = Limiter(storage, clock=fake_clock)
    policy = Policy.parse("c", "1/second", algorithm="concurrency")
    async with limiter.lease(policy, "k") as held:
        assert held.allowed
        async with limiter.lease(policy, "k") as refused:
            assert not refused.allowed
        calls = len(storage.calls)
        async with limiter.lease(policy, "k") as again:
            assert not again.allowed
        assert len(storage.calls) == calls + 1
    async with limiter.lease(policy, "k") as after:
        assert after.allowed
    await limiter.aclose()


async def test_over_limit_cache_is_bounded() -> None:
    """The cache forgets old entries instead of growing past max_entries."""
    from gatekeeper.limits.decision import PolicyResult
    from gatekeeper.limits.overlimit import OverLimitCache

    cache = OverLimitCache(max_entries=100)
    policy = Policy.parse("p", "1/hour")
    denial = PolicyResult("p", False, 1, 0, 3600.0, 3600.0)
    for i in range(1000):
        cache.add(Check(policy, f"k{i}"), denial, 0.0)
    assert len(cache) <= 100
    assert cache.lookup(Check(policy, "k999"), 1.0) is not None


async def test_reset_forgets_the_cached_denial(fake_clock: FakeClock) -> None:
    """An admin reset clears both the store and the over-limit cache for that key."""
    limiter = memory_limiter(fake_clock)
    policy = Policy.parse("p", "1/hour")
    await limiter.hit(policy, "k")
    assert not (await limiter.hit(policy, "k")).allowed
    await limiter.reset(policy, "k")
    assert (await limiter.hit(policy, "k")).allowed


async def test_shadow_policy_never_denies_but_reports(fake_clock: FakeClock) -> None:
    """A shadow policy over its limit leaves the request allowed and sets shadow_denied."""
    limiter = memory_limiter(fake_clock)
    shadow = Policy.parse("try-me", "1/minute", shadow=True)
    assert (await limiter.hit(shadow, "k")).allowed
    second = await limiter.hit(shadow, "k")
    assert second.allowed
    assert second.shadow_denied
    assert limiter.stats.shadow_denied == 1
    assert limiter.stats.denied == 0


async def test_peek_debits_nothing(fake_clock: FakeClock) -> None:
    """Peeking any number of times leaves the full quota available."""
    limiter = memory_limiter(fake_clock)
    policy = Policy.parse("p", "2/minute")
    for _ in range(5):
        assert (await limiter.peek(policy, "k")).allowed
    assert (await limiter.hit(policy, "k")).remaining == 1


async def test_lease_holds_a_slot_until_the_block_exits(fake_clock: FakeClock) -> None:
    """Two slots: a third concurrent lease is refused until one holder leaves its block."""
    limiter = memory_limiter(fake_clock)
    policy = Policy.parse("c", "2/second", algorithm=Algorithm.CONCURRENCY)
    async with limiter.lease(policy, "k") as a, limiter.lease(policy, "k") as b:
        assert a.allowed
        assert b.allowed
        async with limiter.lease(policy, "k") as c:
            assert not c.allowed
    async with limiter.lease(policy, "k") as d:
        assert d.allowed


async def test_lease_is_released_when_the_block_raises(fake_clock: FakeClock) -> None:
    """An exception inside the block still gives the slot back."""
    limiter = memory_limiter(fake_clock)
    policy = Policy.parse("c", "1/second", algorithm="concurrency")
    with pytest.raises(RuntimeError):
        async with limiter.lease(policy, "k"):
            raise RuntimeError("boom")
    async with limiter.lease(policy, "k") as again:
        assert again.allowed


async def test_stats_count_decisions_and_denials(fake_clock: FakeClock) -> None:
    """Every decision is counted as allowed or denied."""
    limiter = memory_limiter(fake_clock)
    policy = Policy.parse("p", "3/minute")
    await asyncio.gather(*(limiter.hit(policy, "k") for _ in range(5)))
    stats = limiter.stats.as_dict()
    assert (stats["decisions"], stats["allowed"], stats["denied"]) == (5, 3, 2)
    assert stats["degraded"] == 0


async def test_empty_request_is_allowed(fake_clock: FakeClock) -> None:
    """A request with no checks is allowed and touches nothing."""
    limiter = memory_limiter(fake_clock)
    decision = await limiter.decide([])
    assert decision.allowed
    assert decision.results == ()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"deadline": 0}, "deadline"),
        ({"deadline": -1.0}, "deadline"),
        ({"batch_max": 0}, "batch_max"),
        ({"closed_retry_after": 0}, "closed_retry_after"),
    ],
)
def test_bad_limiter_options_name_the_problem(
    fake_clock: FakeClock, options: dict[str, object], fragment: str
) -> None:
    """Invalid limiter options raise ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError, match=fragment):
        memory_limiter(fake_clock, **options)


async def test_bad_checks_are_configuration_errors(fake_clock: FakeClock) -> None:
    """A negative cost and a lease on a non-concurrency policy are refused up front."""
    limiter = memory_limiter(fake_clock)
    policy = Policy.parse("p", "1/second")
    with pytest.raises(ConfigurationError, match="cost"):
        await limiter.hit(policy, "k", cost=-1)
    with pytest.raises(ConfigurationError, match="concurrency"):
        async with limiter.lease(policy, "k"):
            pass


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: Policy.parse("p", "5/fortnight"), "unknown period 'fortnight'"),
        (lambda: Policy.parse("p", "0/second"), "at least 1"),
        (lambda: Policy("p", "10/second", algorithm="leaky"), "unknown algorithm"),  # type: ignore[arg-type]
        (lambda: Policy("p", "10/second", failure="maybe"), "failure must be"),  # type: ignore[arg-type]
        (lambda: storage_from_url("mongodb://x"), "mongodb"),
        (lambda: storage_from_url("redis://host:notaport"), "notaport"),
    ],
)
def test_bad_configuration_is_named(build: object, fragment: str) -> None:
    """Bad rates, algorithms, failure modes and storage URLs raise ConfigurationError."""
    with pytest.raises(ConfigurationError, match=fragment):
        build()  # type: ignore[operator]


async def test_a_malformed_group_fails_only_its_caller(fake_clock: FakeClock) -> None:
    """A concurrency check without a lease id raises for its caller; the batch and the
    breaker are unaffected."""
    storage = RecordingStorage(fake_clock)
    limiter = Limiter(storage, clock=fake_clock)
    good = Policy.parse("p", "10/minute")
    bad = Policy.parse("c", "1/second", algorithm="concurrency")
    results = await asyncio.gather(
        limiter.hit(good, "k"), limiter.decide([Check(bad, "k")]), return_exceptions=True
    )
    assert isinstance(results[0], Decision)
    assert results[0].allowed
    assert not results[0].degraded
    assert isinstance(results[1], ConfigurationError)
    assert limiter.breaker.failures == 0
    await limiter.aclose()


def test_the_fast_admitted_decision_equals_the_regular_one() -> None:
    """The hot path's hand-built Decision is indistinguishable from the dataclass's own."""
    from gatekeeper.limits.decision import PolicyResult
    from gatekeeper.limits.limiter import _admitted

    result = PolicyResult("p", True, 10, 9, 1.0, 0.0)
    fast = _admitted(result)
    assert fast == Decision(True, (result,))
    assert hash(fast) == hash(Decision(True, (result,)))
    assert (fast.allowed, fast.degraded, fast.shadow_denied, fast.remaining) == (
        True,
        False,
        False,
        9,
    )
