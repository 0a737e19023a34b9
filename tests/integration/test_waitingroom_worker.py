"""Admission workers as real processes: one leads, the other takes over when it is killed."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from gatekeeper.persistence.testing import scratch_database
from gatekeeper.waitingroom.config_repository import SqlConfigRepository
from gatekeeper.waitingroom.redis_store import RedisStore, tenant_base
from gatekeeper.waitingroom.testing import patient_guard
from tests import services

pytestmark = [pytest.mark.redis, pytest.mark.slow]

T = "flash-sale"
LIMIT = 5
USERS = 40


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gatekeeper", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


async def _started(proc: subprocess.Popen[bytes]) -> None:
    """Wait (bounded) until the worker logs that it runs: its imports are done."""
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while b"worker_started" not in await asyncio.to_thread(proc.stdout.readline):
            pass


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def _wait_for(predicate: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    """Poll ``predicate`` (real processes do real work: this waits for an event, bounded)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not reached")


async def test_killed_leader_is_replaced_without_lost_or_doubled_ticks(
    redis_prefix: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    """SIGKILL the lease holder mid-run: the other worker takes over, catches up the missed
    ticks, and every user is admitted once, in order, at exactly LIMIT per second."""
    client = aioredis.Redis.from_url(services.redis_url())
    store = RedisStore(client, prefix=redis_prefix, guard=patient_guard())
    base = tenant_base(redis_prefix, T)
    lease_key = f"{redis_prefix}:wr:lease:admission"
    try:
        async with scratch_database("sqlite+aiosqlite:///unused.db") as database:
            repository = SqlConfigRepository(database)
            await repository.ensure([T])
            config = await repository.get(T)
            assert config is not None
            await repository.save(
                T, config.updated({"admission_limit": LIMIT, "admission_frequency": 1})
            )
            for i in range(USERS):
                await store.enqueue(T, f"user-{i}", time.time(), 60)
            env = {
                **os.environ,
                "GATEKEEPER_REDIS_URL": services.redis_url(),
                "GATEKEEPER_DATABASE_URL": database.url,
                "GATEKEEPER_BUSINESS_IDS": T,
                "GATEKEEPER_WAITINGROOM_REDIS_PREFIX": redis_prefix,
                "GATEKEEPER_WAITINGROOM_LEASE_SECONDS": "1",
                "GATEKEEPER_WAITINGROOM_CONFIG_CACHE_SECONDS": "0",
            }
            processes.append(_spawn(env))

            async def admitted_some() -> bool:
                return int(await client.get(base + "head") or 0) >= LIMIT

            await _wait_for(admitted_some)
            processes.append(_spawn(env))
            await _started(processes[-1])
            holder = (await client.get(lease_key)).decode()
            leader = next(p for p in processes if f":{p.pid}:" in holder)
            follower = next(p for p in processes if p is not leader)
            leader.send_signal(signal.SIGKILL)
            leader.wait(timeout=10)

            async def taken_over() -> bool:
                value = await client.get(lease_key)
                return value is not None and f":{follower.pid}:".encode() in value

            await _wait_for(taken_over)

            async def all_admitted() -> bool:
                return int(await client.get(base + "head") or 0) >= USERS

            await _wait_for(all_admitted, within=30)
            follower.send_signal(signal.SIGTERM)
            assert follower.wait(timeout=10) == 0
            assert await client.get(lease_key) is None  # released on a clean stop

        history = [e.decode().split(":") for e in await client.lrange(base + "hist", 0, -1)]
        times = [float(t) for t, _ in history]
        counts = [int(c) for _, c in history]
        assert sum(counts) == USERS
        # No tick lost or doubled: by each entry, exactly LIMIT per period of the schedule
        # (anchored at the first tick), whichever worker ran it and however late.
        first = times[0]
        totals = [sum(counts[: i + 1]) for i in range(len(counts))]
        for when, total in zip(times, totals, strict=True):
            periods = math.floor(when - first + 0.002) + 1
            assert total == min(USERS, LIMIT * periods), (when - first, total, history)
        # Each user exactly once and in FIFO order: ready-until grows with the ticket number.
        ready = await client.zrange(base + "ready", 0, -1, withscores=True)
        tickets = [int(m) for m, _ in ready]
        assert sorted(tickets) == list(range(1, USERS + 1))
        scores = {int(m): s for m, s in ready}
        assert all(scores[t] <= scores[t + 1] for t in range(1, USERS))
    finally:
        await client.aclose()
