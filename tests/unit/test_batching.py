"""Batching: concurrent decisions on one loop become one store call per loop turn."""

from __future__ import annotations

import asyncio

import pytest

from gatekeeper.errors import ConfigurationError, StorageError
from gatekeeper.limits.batching import Batcher
from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.policy import Policy
from gatekeeper.testing import FakeClock
from tests.unit.limiter_helpers import RecordingStorage


class Echo:
    """A batch runner that records each batch and answers every item with itself doubled."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[int], int | None]] = []

    async def __call__(self, items: list[int], now_us: int | None) -> list[int]:
        self.batches.append((list(items), now_us))
        return [i * 2 for i in items]


async def test_concurrent_submissions_become_one_call_in_order() -> None:
    """100 submissions in one loop turn are run as one batch and each gets its own result."""
    run = Echo()
    batcher: Batcher[int, int] = Batcher(run, batch_max=1000, split_at=1000)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(100)))
    assert results == [i * 2 for i in range(100)]
    assert len(run.batches) == 1
    assert run.batches[0][0] == list(range(100))


async def test_a_large_batch_with_nothing_in_flight_leaves_as_two_halves() -> None:
    """The store runs one half while this process handles the other: 40 items at split_at=16
    go as 20 + 20; the next turn's batch, sent while one is still out, goes whole."""
    gate = asyncio.Event()
    seen: list[list[int]] = []

    async def slow(items: list[int], now_us: int | None) -> list[int]:
        seen.append(list(items))
        if len(seen) == 2:
            await gate.wait()  # the second half stays in flight
        return items

    batcher: Batcher[int, int] = Batcher(slow, split_at=16)
    first = [batcher.submit(i) for i in range(40)]
    await asyncio.gather(*first[:20])
    assert [len(s) for s in seen] == [20, 20]
    assert batcher.in_flight == 1
    second = asyncio.gather(*(batcher.submit(i) for i in range(100, 130)))
    for _ in range(3):
        await asyncio.sleep(0)  # loop turns, not wall time
    assert [len(s) for s in seen] == [20, 20, 30]
    gate.set()
    assert await asyncio.gather(*first[20:]) == list(range(20, 40))
    assert await second == list(range(100, 130))


async def test_a_batch_below_split_at_is_never_split() -> None:
    run = Echo()
    batcher: Batcher[int, int] = Batcher(run, split_at=16)
    await asyncio.gather(*(batcher.submit(i) for i in range(15)))
    assert [len(items) for items, _ in run.batches] == [15]


async def test_batch_max_splits_a_turn_into_bounded_batches() -> None:
    """With batch_max=4, ten submissions go out as batches of 4, 4 and 2."""
    run = Echo()
    batcher: Batcher[int, int] = Batcher(run, batch_max=4)
    await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert [len(items) for items, _ in run.batches] == [4, 4, 2]
    assert batcher.largest == 4
    assert batcher.batches == 3


async def test_groups_with_different_now_us_are_never_mixed() -> None:
    """A batch carries one now_us, so explicit times from tests are honoured exactly."""
    run = Echo()
    batcher: Batcher[int, int] = Batcher(run)
    await asyncio.gather(batcher.submit(1, 10), batcher.submit(2, 20), batcher.submit(3, 10))
    assert sorted((tuple(i), t) for i, t in run.batches) == [((1, 3), 10), ((2,), 20)]


async def test_a_failing_batch_fails_every_caller_of_that_batch() -> None:
    """If the runner raises, every caller of the batch receives the exception."""

    async def broken(items: list[int], now_us: int | None) -> list[int]:
        raise StorageError("down")

    batcher: Batcher[int, int] = Batcher(broken)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results)


async def test_several_batches_may_be_in_flight() -> None:
    """A slow batch does not hold back the next turn's batch: both are in flight together."""
    gate = asyncio.Event()
    seen: list[list[int]] = []

    async def slow(items: list[int], now_us: int | None) -> list[int]:
        seen.append(items)
        await gate.wait()
        return items

    batcher: Batcher[int, int] = Batcher(slow)
    first = asyncio.gather(*(batcher.submit(i) for i in range(3)))
    for _ in range(3):
        await asyncio.sleep(0)  # let the first batch go out (loop turns, not wall time)
    second = asyncio.gather(*(batcher.submit(i) for i in range(3, 5)))
    for _ in range(3):
        await asyncio.sleep(0)
    assert batcher.in_flight == 2
    gate.set()
    assert await first == [0, 1, 2]
    assert await second == [3, 4]


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_batch_max_must_be_a_positive_integer(bad: object) -> None:
    """A nonsensical batch_max is a configuration error naming the option."""
    with pytest.raises(ConfigurationError, match="batch_max"):
        Batcher(Echo(), batch_max=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="split_at"):
        Batcher(Echo(), split_at=bad)  # type: ignore[arg-type]


async def test_limiter_sends_n_concurrent_callers_as_two_half_batches(
    fake_clock: FakeClock,
) -> None:
    """64 concurrent hits on one limiter reach the store as two decide calls of 32 groups (one
    batch, halved so that the store and this process work side by side)."""
    storage = RecordingStorage(fake_clock)
    limiter = Limiter(storage, clock=fake_clock)
    policy = Policy.parse("per-ip", "50/minute")
    decisions = await asyncio.gather(*(limiter.hit(policy, "ip:1") for _ in range(64)))
    assert storage.calls == [32, 32]
    assert sum(d.allowed for d in decisions) == 50
    assert limiter.stats.batches == 2
    assert limiter.stats.largest_batch == 32
    await limiter.aclose()


async def test_limiter_batches_respect_batch_max(fake_clock: FakeClock) -> None:
    """The limiter never sends more than batch_max groups in one store call."""
    storage = RecordingStorage(fake_clock)
    limiter = Limiter(storage, clock=fake_clock, batch_max=16)
    policy = Policy.parse("p", "1000/minute")
    await asyncio.gather(*(limiter.hit(policy, f"k{i}") for i in range(40)))
    assert storage.calls == [16, 16, 8]
    await limiter.aclose()


async def test_memory_store_takes_the_synchronous_path(fake_clock: FakeClock) -> None:
    """The memory store has no I/O, so the limiter decides inline and never batches."""
    from gatekeeper.limits.storage import storage_from_url

    limiter = Limiter(storage_from_url("memory://", clock=fake_clock), clock=fake_clock)
    policy = Policy.parse("p", "2/second")
    decisions = await asyncio.gather(*(limiter.hit(policy, "k") for _ in range(3)))
    assert [d.allowed for d in decisions] == [True, True, False]
    assert limiter.stats.batches == 0
    await limiter.aclose()


async def test_a_launch_hook_takes_batches_without_a_task_and_counts_as_in_flight() -> None:
    """A batch the hook takes is resolved by the hook, counts as in flight (so the next
    turn's batch is not split) and is awaited by drain(); a batch it declines runs as usual."""
    loop = asyncio.get_running_loop()
    taken: list[tuple[list[int], list[asyncio.Future[int]], asyncio.Future[None]]] = []

    def launch(
        items: list[int], futures: list[asyncio.Future[int]], now_us: int | None
    ) -> asyncio.Future[None] | None:
        if items[0] < 0:
            return None  # declined: the task path runs it
        done: asyncio.Future[None] = loop.create_future()
        taken.append((items, futures, done))
        return done

    run = Echo()
    batcher: Batcher[int, int] = Batcher(run, split_at=4, launch=launch)
    first = [batcher.submit(i) for i in range(8)]
    await asyncio.sleep(0)
    assert [len(items) for items, _, _ in taken] == [4, 4]  # split: nothing was in flight
    assert batcher.in_flight == 2
    second = [batcher.submit(i) for i in range(10, 18)]
    await asyncio.sleep(0)
    assert [len(items) for items, _, _ in taken] == [4, 4, 8]  # in flight: not split
    declined = await batcher.submit(-1)
    assert declined == -2
    assert run.batches == [([-1], None)]
    for items, futures, done in taken:
        for item, future in zip(items, futures, strict=True):
            future.set_result(item * 3)
        loop.call_soon(done.set_result, None)
    await batcher.drain()
    assert batcher.in_flight == 0
    assert await asyncio.gather(*first, *second) == [i * 3 for i in [*range(8), *range(10, 18)]]
