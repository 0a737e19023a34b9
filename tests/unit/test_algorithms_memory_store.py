"""The memory store's own surface: the synchronous fast paths, its clock, bounded memory."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.policy import Algorithm, Check, Policy
from gatekeeper.limits.storage import MemoryStorage
from gatekeeper.testing import FakeClock

SECOND = 1_000_000


@pytest.mark.parametrize("algorithm", [a for a in Algorithm if a is not Algorithm.CONCURRENCY])
def test_hit_and_bind_agree_with_decide_sync(algorithm: Algorithm) -> None:
    """The boolean fast paths admit exactly what decide_sync admits, hit after hit."""
    clock = FakeClock()
    policy = Policy("p", "3/second", algorithm=algorithm)
    slow, fast, bound = MemoryStorage(clock=clock), MemoryStorage(clock=clock), MemoryStorage()
    hit = bound.bind(policy)
    now = clock.now_us()
    for step, cost in [(0, 1), (0, 2), (0, 1), (300_000, 1), (400_000, 2), (10, 0), (SECOND, 3)]:
        now += step
        expected = slow.decide_sync([[Check(policy, "k", cost=cost)]], now)[0][0].allowed
        assert fast.hit(policy, "k", cost, now) is expected
        assert hit("k", cost, now) is expected


def test_the_injected_clock_decides_when_no_time_is_given() -> None:
    """Without now_us the store reads its clock: a denial turns into an admission once the
    fake clock has moved by retry_after."""
    clock = FakeClock()
    store = MemoryStorage(clock=clock)
    policy = Policy("clock", "2/second")
    check = Check(policy, "k")
    store.decide_sync([[check], [check]])
    denied = store.decide_sync([[check]])[0][0]
    assert not denied.allowed
    clock.advance(denied.retry_after)
    assert store.decide_sync([[check]])[0][0].allowed
    assert not store.hit(policy, "k")


def test_concurrency_has_no_boolean_fast_path() -> None:
    """bind/hit refuse concurrency policies: they need a lease id."""
    store = MemoryStorage()
    with pytest.raises(ConfigurationError, match="lease_id"):
        store.bind(Policy("c", "2/second", algorithm="concurrency"))


def test_expired_keys_are_swept_so_memory_stays_bounded() -> None:
    """Thousands of one-off subjects leave nothing behind once their state has reset."""
    clock = FakeClock()
    store = MemoryStorage(clock=clock, sweep_interval=3600)
    policy = Policy("sweep", "5/second", algorithm="sliding_log")
    now = clock.now_us()
    for i in range(5000):
        store.hit(policy, f"subject-{i}", 1, now + i * 1000)
    # One new subject per millisecond, each live for a second: about 1,000 live at a time;
    # sweeping whenever the dict doubles keeps it within a small multiple of that.
    assert len(store) <= 3 * 1000 + 1024
    later = now + 10 * SECOND
    store.hit(policy, "late", 1, later)
    assert store.sweep(later) >= 0
    assert len(store) == 1


def test_the_periodic_sweep_runs_after_sweep_interval() -> None:
    """Even without growth, expired entries go once sweep_interval seconds have passed."""
    clock = FakeClock()
    store = MemoryStorage(clock=clock, sweep_interval=5)
    policy = Policy("tick", "1/second")
    store.decide_sync([[Check(policy, f"s{i}")] for i in range(10)])
    assert len(store) == 10
    clock.advance(6)
    store.decide_sync([[Check(policy, "fresh")]])
    assert len(store) == 1


async def test_release_of_an_unknown_lease_is_harmless() -> None:
    """Releasing a lease that is not held (or on a key without state) changes nothing."""
    store = MemoryStorage()
    policy = Policy("c", "1/second", algorithm="concurrency")
    await store.release([Check(policy, "k", lease_id="ghost")], "ghost")
    assert (await store.decide([[Check(policy, "k", lease_id="a")]]))[0][0].allowed
    await store.release([Check(policy, "k", lease_id="b")], "b")
    assert not (await store.decide([[Check(policy, "k", lease_id="c")]]))[0][0].allowed


def test_a_policy_reloaded_with_another_algorithm_starts_afresh() -> None:
    """Same name, new algorithm (a configuration reload): no crash on the old state's shape."""
    store = MemoryStorage()
    before = Policy("api", "2/second", algorithm="sliding_log")
    after = Policy("api", "2/second", algorithm="sliding_window")
    store.decide_sync([[Check(before, "k")], [Check(before, "k")]], 0)
    assert not store.hit(before, "k", 1, 0)
    assert store.decide_sync([[Check(after, "k")]], 0)[0][0].remaining == 1
    assert store.hit(after, "k", 1, 0)
