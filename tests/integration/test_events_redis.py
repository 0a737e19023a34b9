"""The Redis outbox: one leader delivers, a successor takes over what a dead leader left
unacknowledged, and ``kill -9`` of the delivering replica process loses no event."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gatekeeper.events.emitter import BufferedEmitter
from gatekeeper.events.model import Event
from gatekeeper.events.redis_outbox import RedisOutbox
from gatekeeper.events.sinks.webhooks import new_secret
from tests.integration.events_support import WebhookReceiver, until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_keys_share_one_cluster_slot(redis: Redis, redis_prefix: str) -> None:
    """Every key of the outbox carries the {events} hash tag."""
    outbox = RedisOutbox(redis, prefix=redis_prefix)
    assert all("{events}" in key for key in outbox.keys.values())


async def test_emitted_events_reach_the_leader_and_only_one_replica_leads(
    redis: Redis, redis_prefix: str
) -> None:
    """Two replicas emit; of two deliverers one leads and reads both replicas' events; the
    other is refused the lease until the first resigns."""
    one, two = RedisOutbox(redis, prefix=redis_prefix), RedisOutbox(redis, prefix=redis_prefix)
    a, b = BufferedEmitter(one, source="gk/a"), BufferedEmitter(two, source="gk/b")
    a.emit("key.blocked", {"key_id": "k1"})
    b.emit("key.unblocked", {"key_id": "k1"})
    assert await a.flush() == 1
    assert await b.flush() == 1
    assert await one.lead("A", 5)
    assert not await two.lead("B", 5)
    got = await one.read("A", 10, 0.1)
    assert {e.source for _, e in got} == {"gk/a", "gk/b"}
    await one.ack([i for i, _ in got])
    assert await one.backlog() == 0
    await one.resign("A")
    assert await two.lead("B", 5)


async def test_a_successor_claims_what_a_dead_leader_left_unacknowledged(
    redis: Redis, redis_prefix: str
) -> None:
    """Leader A reads a batch and dies before acknowledging; B, once leader, gets the same
    entries (same event ids) before anything new."""
    outbox = RedisOutbox(redis, prefix=redis_prefix)
    events = [Event("test", {"i": i}, 1.7e9, "t") for i in range(5)]
    await outbox.append(events)
    assert await outbox.lead("A", 0.2)
    taken = await outbox.read("A", 3, 0.1)
    assert len(taken) == 3
    await outbox.append([Event("test", {"i": 99}, 1.7e9, "t")])
    await asyncio.sleep(0.3)  # A's lease expires (A was "killed")
    successor = RedisOutbox(redis, prefix=redis_prefix)
    assert await successor.lead("B", 5)
    again = await successor.read("B", 3, 0.1)
    assert [e.id for _, e in again] == [e.id for _, e in taken]
    await successor.ack([i for i, _ in again])
    rest = await successor.read("B", 10, 0.1)
    assert [e.data["i"] for _, e in rest] == [3, 4, 99]


async def test_dead_letters_and_deliveries_are_shared_bounded_lists(
    redis: Redis, redis_prefix: str
) -> None:
    """Records written by the leader are read by any replica, newest first, trimmed."""
    outbox = RedisOutbox(redis, prefix=redis_prefix, keep_deliveries=3)
    await outbox.record([{"n": i} for i in range(5)])
    reader = RedisOutbox(redis, prefix=redis_prefix)
    assert [r["n"] for r in await reader.deliveries(10)] == [4, 3, 2]


def _replica(redis_url: str, prefix: str, hook: str, secret: str) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "tests.integration.events_replica",
        redis_url,
        prefix,
        hook,
        secret,
    ]
    return subprocess.Popen(args, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE)


@pytest.mark.slow
async def test_kill_9_of_the_delivering_replica_loses_no_event(
    redis: Redis, redis_url: str, redis_prefix: str
) -> None:
    """A replica process delivers 200 events to a slow receiver; SIGKILL mid-delivery; a new
    replica delivers the rest: every event id arrives (duplicates only of the same id)."""
    secret = new_secret()
    receiver = await WebhookReceiver(secret=secret, delay=0.01).start()
    outbox = RedisOutbox(redis, prefix=redis_prefix)
    events = [Event("test", {"i": i}, 1.7e9, "t") for i in range(200)]
    await outbox.append(events)
    first = _replica(redis_url, redis_prefix, receiver.url, secret)
    second = None
    try:
        assert await until(lambda: len(receiver.received) >= 25, 30)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert first.returncode == -signal.SIGKILL
        before = {r.headers["webhook-id"] for r in receiver.received}
        assert len(before) < 200  # killed mid-delivery
        second = _replica(redis_url, redis_prefix, receiver.url, secret)
        everything = {e.id for e in events}
        done = await until(
            lambda: {r.headers["webhook-id"] for r in receiver.received} >= everything, 60
        )
        assert done, f"{len({r.headers['webhook-id'] for r in receiver.received})} of 200"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
            if process is not None and process.stdout is not None:
                process.stdout.close()
        await receiver.stop()
    assert all(r.valid for r in receiver.received)
    assert {r.headers["webhook-id"] for r in receiver.received} == {e.id for e in events}


async def test_replay_puts_the_oldest_dead_letters_back_in_order(
    redis: Redis, redis_prefix: str
) -> None:
    """Three dead letters, replay two: the two oldest come back (same ids, in order); the
    newest stays in the list."""
    outbox = RedisOutbox(redis, prefix=redis_prefix)
    events = [Event("test", {"i": i}, 1.7e9, "t") for i in range(3)]
    for event in events:  # oldest first, as the leader writes them
        await outbox.dead_letter([{"event": event.envelope(), "target": "x"}])
    assert await outbox.replay(2) == 2
    left = await outbox.dead_letters(10)
    assert [d["event"]["id"] for d in left] == [events[2].id]
    assert await outbox.lead("A", 5)
    got = await outbox.read("A", 10, 0.1)
    assert [e.id for _, e in got] == [events[0].id, events[1].id]


async def test_a_malformed_entry_is_set_aside_and_delivery_goes_on(
    redis: Redis, redis_prefix: str
) -> None:
    """An entry that is not an event (written by another program) goes to the dead letters,
    acknowledged; the events around it are read; replay drops it."""
    outbox = RedisOutbox(redis, prefix=redis_prefix)
    good = [Event("test", {"i": i}, 1.7e9, "t") for i in range(2)]
    await outbox.append(good[:1])
    await redis.xadd(outbox.stream, {"e": b"not json"})
    await outbox.append(good[1:])
    assert await outbox.lead("A", 5)
    got = await outbox.read("A", 10, 0.1)
    assert [e.id for _, e in got] == [e.id for e in good]
    dead = await outbox.dead_letters(10)
    assert dead[0]["error"] == "malformed"
    assert await outbox.replay(10) == 0
    assert await outbox.dead_letters(10) == []


async def test_each_sink_group_reads_everything_and_the_stream_is_trimmed_behind_all(
    redis: Redis, redis_prefix: str
) -> None:
    """Two sinks' groups: each has its own lease and reads every event; entries one group
    acknowledged stay until the other has them too, then the stream is trimmed empty."""
    outbox = RedisOutbox(redis, prefix=redis_prefix)
    a, b = outbox.group("webhooks"), outbox.group("email")
    await a.prepare()
    await b.prepare()
    events = [Event("test", {"i": i}, 1.7e9, "t") for i in range(5)]
    await outbox.append(events)
    assert await a.lead("A", 5)
    assert await b.lead("B", 5)  # (another lease: another replica may lead this sink)
    got_a = await a.read("A", 10, 0.1)
    await a.ack([i for i, _ in got_a])
    assert await redis.xlen(outbox.stream) == 5  # email has not read them
    got_b = await b.read("B", 10, 0.1)
    assert [e.id for _, e in got_b] == [e.id for e in events]
    b._trimmed_at = -1e9  # (trim now, not within the second)
    await b.ack([i for i, _ in got_b])
    assert await redis.xlen(outbox.stream) == 0
