"""One behaviour, two stores: every test runs on the memory store and on real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gatekeeper.testing import FakeClock
from gatekeeper.waitingroom.memory_store import MemoryStore
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.store import TicketState, WaitingRoomStore
from gatekeeper.waitingroom.testing import patient_guard
from tests import services

GRACE = 60
T = "acme"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(
    request: pytest.FixtureRequest, redis_prefix: str
) -> AsyncIterator[WaitingRoomStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    client = aioredis.Redis.from_url(services.redis_url())
    redis_store = RedisStore(client, prefix=redis_prefix, lean=True, guard=patient_guard())
    try:
        yield redis_store
    finally:
        await redis_store.aclose()
        await client.aclose()


async def admit(store: WaitingRoomStore, clock: FakeClock, limit: int = 2, freq: int = 5):
    return await store.admit(
        T, limit=limit, frequency=freq, ready_ttl=300, now=clock.now(), grace=GRACE
    )


async def test_tickets_are_issued_in_order_with_positions(
    store: WaitingRoomStore, fake_clock: FakeClock
) -> None:
    """Each new user gets the next ticket and a position one behind the previous user."""
    results = [await store.enqueue(T, f"u{i}", fake_clock.now(), GRACE) for i in range(5)]
    assert [r.ticket for r in results] == [1, 2, 3, 4, 5]
    assert [r.position for r in results] == [1, 2, 3, 4, 5]
    assert not any(r.duplicate for r in results)


async def test_concurrent_enqueues_get_distinct_tickets(
    store: WaitingRoomStore, fake_clock: FakeClock
) -> None:
    """Enqueues made in the same loop turn (one coalesced batch) still get distinct tickets."""
    results = await asyncio.gather(
        *(store.enqueue(T, f"u{i}", fake_clock.now(), GRACE) for i in range(50))
    )
    assert sorted(r.ticket for r in results) == list(range(1, 51))
    again = await asyncio.gather(store.enqueue(T, "u7", fake_clock.now(), GRACE))
    assert again[0].duplicate
    assert again[0].ticket == results[7].ticket


async def test_duplicate_enqueue_keeps_the_place(
    store: WaitingRoomStore, fake_clock: FakeClock
) -> None:
    """A user already queued gets their ticket and current position back, not a new place."""
    first = await store.enqueue(T, "alice", fake_clock.now(), GRACE)
    await store.enqueue(T, "bob", fake_clock.now(), GRACE)
    again = await store.enqueue(T, "alice", fake_clock.now(), GRACE)
    assert again.duplicate
    assert again.ticket == first.ticket
    assert again.position == 1
    assert (await store.stats(T, fake_clock.now())).queued == 2


async def test_admission_is_fifo_and_ready_sessions_verify(
    store: WaitingRoomStore, fake_clock: FakeClock
) -> None:
    """A tick makes the first `limit` users ready; others move up; verify follows readiness."""
    for i in range(5):
        await store.enqueue(T, f"u{i}", fake_clock.now(), GRACE)
    result = await admit(store, fake_clock)
    assert (result.ticks, result.admitted, result.head) == (1, 2, 2)
    assert await store.verify(T, 1, "u0", fake_clock.now())
    assert await store.verify(T, 2, "u1", fake_clock.now())
    assert not await store.verify(T, 3, "u2", fake_clock.now())
    assert not await store.verify(T, 1, "u1", fake_clock.now())  # someone else's ticket
    status = await store.status(T, 3, "u2", fake_clock.now(), GRACE)
    assert status.state is TicketState.QUEUED
    assert status.position == 1
    ready = await store.status(T, 1, "u0", fake_clock.now(), GRACE)
    assert ready.state is TicketState.READY
    assert ready.ready_until == fake_clock.now() + 300
    dup = await store.enqueue(T, "u0", fake_clock.now(), GRACE)
    assert dup.duplicate
    assert dup.state is TicketState.READY
    assert dup.position is None


async def test_ticks_follow_the_schedule_without_doubling(
    store: WaitingRoomStore, fake_clock: FakeClock
) -> None:
    """A second call within the same period admits nobody; the next period admits again."""
    for i in range(10):
        await store.enqueue(T, f"u{i}", fake_clock.now(), GRACE)
    assert (await admit(store, fake_clock)).admitted == 2
    fake_clock.advance(4.9)
    again = await admit(store, fake_clock)
    assert (again.ticks, again.admitted, again.head) == (0, 0, 2)
    fake_clock.advance(0.1)
    assert (await admit(store, fake_clock)).admitted == 2


async def test_missed_ticks_are_caught_up_but_bounded(
    store: WaitingRoomStore, fake_clock: FakeClock
) -> None:
    """After two missed periods the next call performs three ticks; a long outage at most 3."""
    for i in range(40):
        await store.status(T, 0, "x", fake_clock.now(), GRACE)
        await store.enqueue(T, f"u{i}", fake_clock.now(), GRACE)
    await admit(store, fake_clock)
    fake_clock.advance(15)
    caught_up = await admit(store, fake_clock)
    assert (caught_up.ticks, caught_up.admitted, caught_up.head) == (3, 6, 8)
    assert caught_up.next_tick == fake_clock.now() + 5


async def test_finish_ends_the_session_once(store: WaitingRoomStore, fake_clock: FakeClock) -> None:
    """Finish clears a ready session (no replay); finishing a queued ticket is refused."""
    for i in range(3):
        await store.enqueue(T, f"u{i}", fake_clock.now(), GRACE)
    await admit(store, fake_clock, limit=1)
    assert not await store.finish(T, 2, "u1", fake_clock.now())
    assert await store.finish(T, 1, "u0", fake_clock.now())
    assert not await store.verify(T, 1, "u0", fake_clock.now())
    assert not await store.finish(T, 1, "u0", fake_clock.now())
    gone = await store.status(T, 1, "u0", fake_clock.now(), GRACE)
    assert gone.state is TicketState.GONE
    fresh = await store.enqueue(T, "u0", fake_clock.now(), GRACE)
    assert not fresh.duplicate
    assert fresh.ticket == 4
    assert fresh.position == 3


async def test_ready_sessions_expire_after_ttl(
    store: WaitingRoomStore, fake_clock: FakeClock
) -> None:
    """A ready session stops verifying at ready_ttl and the next tick forgets it."""
    await store.enqueue(T, "u0", fake_clock.now(), GRACE)
    await admit(store, fake_clock)
    fake_clock.advance(299)
    assert await store.verify(T, 1, "u0", fake_clock.now())
    fake_clock.advance(1)
    assert not await store.verify(T, 1, "u0", fake_clock.now())
    result = await admit(store, fake_clock)
    assert result.expired == 1
    assert (await store.stats(T, fake_clock.now())).ready == 0


async def test_abandoned_users_do_not_count_and_are_skipped(
    store: WaitingRoomStore, fake_clock: FakeClock
) -> None:
    """Users who stop polling past the grace period leave the count and are skipped."""
    for i in range(6):
        await store.enqueue(T, f"u{i}", fake_clock.now(), GRACE)
    # u0, u2 and u4 keep polling for two grace periods; u1, u3 and u5 go silent.
    for _ in range(5):
        fake_clock.advance(GRACE / 2)
        for ticket, user in ((1, "u0"), (3, "u2"), (5, "u4")):
            await store.status(T, ticket, user, fake_clock.now(), GRACE)
    status = await store.status(T, 5, "u4", fake_clock.now(), GRACE)
    assert status.position == 5  # nobody swept yet: no tick ran
    result = await admit(store, fake_clock, limit=1)
    assert result.admitted == 1
    assert result.head == 1
    assert result.abandoned == 3
    assert (await store.status(T, 5, "u4", fake_clock.now(), GRACE)).position == 2
    assert (await store.status(T, 2, "u1", fake_clock.now(), GRACE)).state is TicketState.GONE
    fake_clock.advance(5)
    second = await admit(store, fake_clock, limit=1)
    assert (second.admitted, second.head) == (1, 3)  # skipped u1's slot, admitted u2
    assert await store.verify(T, 3, "u2", fake_clock.now())
    assert (await store.stats(T, fake_clock.now())).queued == 1


async def test_silent_user_at_the_head_is_skipped_at_admission(
    store: WaitingRoomStore, fake_clock: FakeClock
) -> None:
    """Admission itself skips a head user not seen this epoch, without wasting the slot."""
    await store.enqueue(T, "silent", fake_clock.now(), GRACE)
    fake_clock.advance(GRACE * 2)
    await store.enqueue(T, "active", fake_clock.now(), GRACE)
    result = await admit(store, fake_clock, limit=1)
    assert (result.admitted, result.skipped, result.head) == (1, 1, 2)
    assert await store.verify(T, 2, "active", fake_clock.now())


async def test_tenants_are_isolated(store: WaitingRoomStore, fake_clock: FakeClock) -> None:
    """Tickets, admission and verification of one tenant never touch another's."""
    await store.enqueue(T, "u", fake_clock.now(), GRACE)
    other = await store.enqueue("other", "u", fake_clock.now(), GRACE)
    assert other.ticket == 1
    assert not other.duplicate
    await admit(store, fake_clock)
    assert await store.verify(T, 1, "u", fake_clock.now())
    assert not await store.verify("other", 1, "u", fake_clock.now())


async def test_leases_are_exclusive_until_released(
    store: WaitingRoomStore, fake_clock: FakeClock
) -> None:
    """One owner holds a lease; it renews; others get it only after release."""
    assert await store.acquire_lease("w", "a", 5, fake_clock.now())
    assert not await store.acquire_lease("w", "b", 5, fake_clock.now())
    assert await store.acquire_lease("w", "a", 5, fake_clock.now())
    await store.release_lease("w", "b")
    assert not await store.acquire_lease("w", "b", 5, fake_clock.now())
    await store.release_lease("w", "a")
    assert await store.acquire_lease("w", "b", 5, fake_clock.now())


async def test_odd_user_ids_in_one_batch_stay_apart(
    store: WaitingRoomStore, fake_clock: FakeClock
) -> None:
    """User ids with separators, digits, multibyte text or spaces, batched together, keep
    their own tickets; a poll of one never answers for another."""
    users = ["a:b", "1:2:", "3", ":", "ü:ßé", "日本:語", " x ", "a:bc", "x" * 256]
    now = fake_clock.now()
    results = await asyncio.gather(*(store.enqueue(T, u, now, GRACE) for u in users))
    assert sorted(r.ticket for r in results) == list(range(1, len(users) + 1))
    again = await asyncio.gather(*(store.enqueue(T, u, now, GRACE) for u in users))
    assert [r.ticket for r in again] == [r.ticket for r in results]
    assert all(r.duplicate for r in again)
    polls = await asyncio.gather(
        *(store.status(T, r.ticket, u, now, GRACE) for u, r in zip(users, results, strict=True)),
        # Someone else's ticket with a user id that shares a prefix: not theirs.
        store.status(T, results[0].ticket, "a:bc", now, GRACE),
    )
    assert [p.position for p in polls[:-1]] == [r.position for r in results]
    assert polls[-1].state is TicketState.GONE
