"""Failure policy: what the limiter answers when the store errors, hangs or stays down."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.policy import Check, Policy
from gatekeeper.limits.resilience import Breaker, BreakerState
from gatekeeper.testing import FakeClock
from tests.unit.limiter_helpers import RecordingStorage


class ListLogger:
    """Collects log calls the way a structlog logger receives them."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def broken(clock: FakeClock, **options: Any) -> tuple[Limiter, RecordingStorage, ListLogger]:
    storage = RecordingStorage(clock)
    storage.fail = True
    log = ListLogger()
    return Limiter(storage, clock=clock, logger=log, **options), storage, log


async def test_fail_open_admits_and_marks_the_decision_degraded(fake_clock: FakeClock) -> None:
    """With the store failing, an open policy admits every request, flagged degraded."""
    limiter, _, _ = broken(fake_clock)
    policy = Policy.parse("p", "1/minute", failure="open")
    decisions = [await limiter.hit(policy, "k") for _ in range(5)]
    assert all(d.allowed and d.degraded for d in decisions)


async def test_fail_closed_denies_with_a_short_retry(fake_clock: FakeClock) -> None:
    """With the store failing, a closed policy denies with Retry-After of about one second."""
    limiter, _, _ = broken(fake_clock)
    policy = Policy.parse("p", "100/minute", failure="closed")
    decision = await limiter.hit(policy, "k")
    assert not decision.allowed
    assert decision.degraded
    assert decision.retry_after == 1


async def test_fallback_enforces_the_local_rate_while_degraded(fake_clock: FakeClock) -> None:
    """An open policy with fallback 3/minute admits exactly 3 per key while the store is down."""
    limiter, _, _ = broken(fake_clock)
    policy = Policy.parse("p", "300/minute", fallback="3/minute")
    decisions = [await limiter.hit(policy, "k") for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert all(d.degraded for d in decisions)
    assert (await limiter.hit(policy, "other")).allowed


@pytest.mark.parametrize(
    "algorithm", ["token_bucket", "gcra", "fixed_window", "sliding_window", "sliding_log"]
)
async def test_fallback_admits_exactly_its_rate_over_a_long_outage(
    fake_clock: FakeClock, algorithm: str
) -> None:
    """A key hit every 10 ms through an eight-second outage gets exactly 5 a second from a
    fallback of "5/second" (the sliding window gave 4: its last slot never came free)."""
    limiter, _, _ = broken(fake_clock)
    policy = Policy.parse("p", "50/second", algorithm=algorithm, fallback="5/second")
    admitted = [0] * 8
    for tick in range(800):
        admitted[tick // 100] += (await limiter.hit(policy, "k")).allowed
        fake_clock.advance(0.01)
    assert admitted[1:] == [5] * 7
    assert admitted[0] <= 10  # a bucket's burst: its capacity plus a second's refill


async def test_a_closed_policy_denies_the_group_without_debiting_the_fallback(
    fake_clock: FakeClock,
) -> None:
    """Open-with-fallback plus closed in one request: denied, and the fallback is not debited."""
    limiter, _storage, _ = broken(fake_clock)
    open_policy = Policy.parse("open", "100/minute", fallback="1/minute")
    closed_policy = Policy.parse("closed", "100/minute", failure="closed")
    group = [Check(open_policy, "k"), Check(closed_policy, "k")]
    for _ in range(3):
        assert not (await limiter.decide(group)).allowed
    assert (await limiter.hit(open_policy, "k")).allowed  # its one fallback slot is intact


async def test_a_hanging_store_is_cut_at_the_deadline(fake_clock: FakeClock) -> None:
    """A store that never answers costs each decision about the deadline, not more."""
    storage = RecordingStorage(fake_clock)
    storage.hang = True
    limiter = Limiter(storage, clock=fake_clock, deadline=0.02, logger=ListLogger())
    policy = Policy.parse("p", "10/second")
    loop = asyncio.get_running_loop()
    started = loop.time()
    decisions = await asyncio.gather(*(limiter.hit(policy, f"k{i}") for i in range(20)))
    elapsed = loop.time() - started
    assert all(d.allowed and d.degraded for d in decisions)
    assert elapsed < 0.02 + 0.2  # the deadline plus a generous margin for a loaded machine
    assert limiter.stats.degraded_by_reason == {"timeout": 20}


async def test_breaker_opens_stops_calling_and_recovers_by_itself(fake_clock: FakeClock) -> None:
    """3 failures open the breaker; no store calls while open; after the cool-down a probe
    succeeds and the limiter is back to real decisions."""
    breaker = Breaker(failure_threshold=3, cooldown=5.0, clock=fake_clock)
    limiter, storage, _ = broken(fake_clock, breaker=breaker)
    policy = Policy.parse("p", "2/hour")
    for _ in range(3):
        await limiter.hit(policy, "k")
    assert breaker.state is BreakerState.OPEN
    calls = len(storage.calls)
    for _ in range(10):
        decision = await limiter.hit(policy, "k")
        assert decision.degraded
    assert len(storage.calls) == calls  # nothing reached the dead store
    assert limiter.stats.degraded_by_reason["breaker_open"] == 10
    storage.fail = False  # the store comes back
    fake_clock.advance(5.0)
    probe = await limiter.hit(policy, "k")
    assert not probe.degraded
    assert probe.allowed
    assert breaker.state is BreakerState.CLOSED
    assert len(storage.calls) == calls + 1


async def test_a_failed_probe_reopens_the_breaker(fake_clock: FakeClock) -> None:
    """The half-open probe failing sends the breaker back to open for another cool-down."""
    breaker = Breaker(failure_threshold=1, cooldown=1.0, clock=fake_clock)
    limiter, storage, _ = broken(fake_clock, breaker=breaker)
    policy = Policy.parse("p", "2/hour")
    await limiter.hit(policy, "k")
    assert breaker.state is BreakerState.OPEN
    fake_clock.advance(1.0)
    await limiter.hit(policy, "k")  # the probe, failing
    assert breaker.state is BreakerState.OPEN
    calls = len(storage.calls)
    await limiter.hit(policy, "k")
    assert len(storage.calls) == calls


async def test_half_open_lets_exactly_one_probe_through(fake_clock: FakeClock) -> None:
    """While the probe is in flight, other batches are decided degraded, not sent."""
    breaker = Breaker(failure_threshold=1, cooldown=1.0, clock=fake_clock)
    limiter, storage, _ = broken(fake_clock, breaker=breaker)
    policy = Policy.parse("p", "100/hour")
    await limiter.hit(policy, "k")
    storage.fail = False
    storage.gate = asyncio.Event()
    fake_clock.advance(1.0)
    probe = asyncio.ensure_future(limiter.hit(policy, "k"))
    for _ in range(3):
        await asyncio.sleep(0)  # loop turns: the probe batch is now waiting on the gate
    assert breaker.state is BreakerState.HALF_OPEN
    other = await limiter.hit(policy, "k2")
    assert other.degraded
    storage.gate.set()
    assert not (await probe).degraded
    assert breaker.state is BreakerState.CLOSED


async def test_degraded_decisions_are_counted_and_logged_once_per_change_of_state(
    fake_clock: FakeClock,
) -> None:
    """Decisions without the store are counted by policy and reason, and the limiter says so in
    one line when it degrades and one when the store answers again (with the episode's count),
    however long the outage."""
    limiter, storage, log = broken(
        fake_clock, breaker=Breaker(failure_threshold=1000, clock=fake_clock)
    )
    policy = Policy.parse("p", "5/minute")
    for _ in range(50):
        await limiter.hit(policy, "k")
        fake_clock.advance(0.1)
    stats = limiter.stats
    assert stats.degraded == 50
    assert stats.degraded_by_policy == {"p": 50}
    assert stats.degraded_by_reason == {"error": 50}
    assert stats.state == "degraded"
    assert [event for event, _ in log.lines] == ["limiter.degraded"]
    storage.fail = False
    assert not (await limiter.hit(policy, "k")).degraded
    assert limiter.stats.state == "ok"
    assert [event for event, _ in log.lines] == ["limiter.degraded", "limiter.recovered"]
    assert log.lines[1][1]["degraded_decisions"] == 50
    assert log.lines[1][1]["seconds"] == pytest.approx(5.0)


async def test_release_failure_is_swallowed(fake_clock: FakeClock) -> None:
    """A store failing on release does not raise out of the lease block."""
    storage = RecordingStorage(fake_clock)
    limiter = Limiter(storage, clock=fake_clock, logger=ListLogger())
    policy = Policy.parse("c", "1/second", algorithm="concurrency")
    async with limiter.lease(policy, "k") as decision:
        assert decision.allowed
        storage.fail = True
    assert storage.releases == 1
    assert limiter.stats.storage_errors == 1


async def test_degraded_leases_are_released_in_the_fallback(fake_clock: FakeClock) -> None:
    """A concurrency lease taken in the fallback store is returned there at exit."""
    limiter, _, _ = broken(fake_clock)
    policy = Policy.parse("c", "10/second", algorithm="concurrency", fallback="1/second")
    for _ in range(3):
        async with limiter.lease(policy, "k") as decision:
            assert decision.allowed
            assert decision.degraded
            async with limiter.lease(policy, "k") as second:
                assert not second.allowed


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (1, 0.0)])
def test_breaker_rejects_nonsense(threshold: int, cooldown: float) -> None:
    """A breaker needs at least one failure to open and a positive cool-down."""
    from gatekeeper.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        Breaker(failure_threshold=threshold, cooldown=cooldown)


async def test_store_calls_and_degraded_decisions_reach_the_metrics(fake_clock: FakeClock) -> None:
    """With metrics attached, each batch's store call and each degraded verdict is recorded."""
    from gatekeeper.observability.metrics import Metrics

    metrics = Metrics()
    storage = RecordingStorage(fake_clock)
    limiter = Limiter(storage, clock=fake_clock, metrics=metrics, logger=ListLogger())
    policy = Policy.parse("p", "10/minute", failure="closed")
    await asyncio.gather(*(limiter.hit(policy, "k") for _ in range(3)))
    storage.fail = True
    await limiter.hit(policy, "k")
    text = metrics.render().decode()
    assert 'store="redis"' in text
    degraded = [line for line in text.splitlines() if line.startswith("gatekeeper_") and
                "fail_closed" in line]  # fmt: skip
    assert degraded
    assert degraded[0].endswith(" 1.0")
    metrics.close()
