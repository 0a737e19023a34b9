"""The limiter against a real Redis that dies, freezes and comes back (a private redis-server).

Each decision must follow its policy's failure mode while Redis is gone (open admits, closed
denies, fallback limits locally), must not take much longer than the deadline, and the limiter
must recover by itself once Redis returns (breaker: open -> half-open probe -> closed). The
breaker's cool-down runs on a FakeClock; only the deadline is real time.
"""

from __future__ import annotations

import asyncio

import pytest

from gatekeeper.limits import Breaker, BreakerState, Decision, Limiter, Policy, storage_from_url
from gatekeeper.testing import FakeClock
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

DEADLINE = 0.05
# Generous: this machine is shared by many test runs; the claim is "about the deadline", not
# "as long as Redis is down" (which would be seconds to forever).
MARGIN = 0.5
CALLERS = 24
FALLBACK = 5


class QuietLogger:
    def __init__(self) -> None:
        self.events: list[str] = []

    def warning(self, event: str, **fields: object) -> None:
        self.events.append(event)


def policy_for(mode: str) -> Policy:
    if mode == "open":
        return Policy.parse("faults", "1000/minute", failure="open")
    if mode == "closed":
        return Policy.parse("faults", "1000/minute", failure="closed")
    return Policy.parse("faults", "1000/minute", fallback=f"{FALLBACK}/minute")


def make_limiter(server: RedisServer, clock: FakeClock) -> Limiter:
    storage = storage_from_url(server.url, socket_connect_timeout=0.5)
    breaker = Breaker(failure_threshold=2, cooldown=1.0, clock=clock)
    return Limiter(storage, deadline=DEADLINE, clock=clock, breaker=breaker, logger=QuietLogger())


async def timed_hits(limiter: Limiter, policy: Policy, n: int) -> list[tuple[Decision, float]]:
    """n concurrent hits on one key; each decision with its own latency in seconds."""
    loop = asyncio.get_running_loop()

    async def one() -> tuple[Decision, float]:
        started = loop.time()
        decision = await limiter.hit(policy, "client")
        return decision, loop.time() - started

    return await asyncio.gather(*(one() for _ in range(n)))


def assert_follows_policy(mode: str, decisions: list[Decision]) -> None:
    """Degraded decisions follow the mode; fallback admits FALLBACK in all (one key)."""
    degraded = [d for d in decisions if d.degraded]
    admitted = sum(d.allowed for d in degraded)
    if mode == "open":
        assert admitted == len(degraded)
    elif mode == "closed":
        assert admitted == 0
        assert all(d.retry_after == 1 for d in degraded)
    else:
        assert admitted == FALLBACK


async def recover(limiter: Limiter, policy: Policy, clock: FakeClock) -> Decision:
    """Advance past cool-downs until a real (non-degraded) decision comes back; bounded."""
    for _ in range(30):
        clock.advance(1.0)
        decision = await limiter.hit(policy, "after")
        if not decision.degraded:
            return decision
        await asyncio.sleep(0.05)  # give the restarted server a moment to accept
    pytest.fail("the limiter did not recover after Redis came back")


async def healthy_round(limiter: Limiter, policy: Policy) -> None:
    results = await timed_hits(limiter, policy, CALLERS)
    assert all(d.allowed and not d.degraded for d, _ in results)


@pytest.mark.parametrize("mode", ["open", "closed", "fallback"])
async def test_redis_killed_mid_load_then_restarted(
    private_redis: RedisServer, fake_clock: FakeClock, mode: str
) -> None:
    """Killed: decisions follow the failure mode within the deadline; restarted: back to real."""
    policy = policy_for(mode)
    limiter = make_limiter(private_redis, fake_clock)
    try:
        await healthy_round(limiter, policy)
        load = asyncio.ensure_future(timed_hits(limiter, policy, CALLERS))
        private_redis.kill()  # while the batch is on its way
        during = await load
        outage: list[tuple[Decision, float]] = []
        for _ in range(3):
            outage += await timed_hits(limiter, policy, CALLERS)
        assert all(d.degraded for d, _ in outage)
        assert_follows_policy(mode, [d for d, _ in during + outage])
        assert max(t for _, t in outage) < DEADLINE + MARGIN
        assert limiter.breaker.state is BreakerState.OPEN
        assert limiter.stats.degraded >= len(outage)

        private_redis.start()  # same port: the pool reconnects, the script is loaded again
        decision = await recover(limiter, policy, fake_clock)
        assert decision.allowed
        assert limiter.breaker.state is BreakerState.CLOSED
        await healthy_round(limiter, policy)
    finally:
        await limiter.aclose()


@pytest.mark.parametrize("mode", ["open", "closed", "fallback"])
async def test_redis_paused_past_the_deadline_then_resumed(
    private_redis: RedisServer, fake_clock: FakeClock, mode: str
) -> None:
    """SIGSTOP: every decision returns after about the deadline, degraded per policy; the
    breaker then stops waiting at all; SIGCONT: the limiter recovers by itself."""
    policy = policy_for(mode)
    limiter = make_limiter(private_redis, fake_clock)
    try:
        await healthy_round(limiter, policy)
        private_redis.pause()
        outage: list[tuple[Decision, float]] = []
        for _ in range(4):
            outage += await timed_hits(limiter, policy, CALLERS)
        assert all(d.degraded for d, _ in outage)
        assert_follows_policy(mode, [d for d, _ in outage])
        assert max(t for _, t in outage) < DEADLINE + MARGIN
        reasons = limiter.stats.degraded_by_reason
        # Two store calls (the first round's two half-batches) waited out the deadline and
        # opened the breaker (threshold 2)...
        assert reasons.get("timeout", 0) >= CALLERS
        assert reasons.get("breaker_open", 0) >= CALLERS  # ...so later ones did not wait at all

        private_redis.resume()
        decision = await recover(limiter, policy, fake_clock)
        assert decision.allowed
        assert limiter.breaker.state is BreakerState.CLOSED
    finally:
        await limiter.aclose()


async def test_redis_down_from_the_start_never_raises(
    private_redis: RedisServer, fake_clock: FakeClock
) -> None:
    """A limiter whose Redis was never reachable answers degraded decisions, never errors."""
    private_redis.kill()
    limiter = make_limiter(private_redis, fake_clock)
    try:
        decisions = [d for d, _ in await timed_hits(limiter, policy_for("open"), CALLERS)]
        assert all(d.allowed and d.degraded for d in decisions)
        assert limiter.stats.storage_errors >= 1
    finally:
        await limiter.aclose()
