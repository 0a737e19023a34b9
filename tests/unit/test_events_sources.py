"""Where events come from: the 429 spike counter, the limiter's breaker, an upstream pool's
health checks and breakers, the waiting room's admission worker. Each reports through a real
BufferedEmitter; the test reads what it buffered."""

from __future__ import annotations

from gatekeeper.events.emitter import BufferedEmitter
from gatekeeper.events.outbox import MemoryOutbox
from gatekeeper.events.spikes import SpikeDetector
from gatekeeper.gateway.upstream.breaker import BreakerConfig
from gatekeeper.gateway.upstream.endpoint import Endpoint
from gatekeeper.gateway.upstream.health import HealthCheckConfig
from gatekeeper.gateway.upstream.pool import UpstreamPool
from gatekeeper.limits.resilience import Breaker
from gatekeeper.testing import FakeClock
from gatekeeper.waitingroom.config import TenantConfig
from gatekeeper.waitingroom.config_repository import MemoryConfigRepository
from gatekeeper.waitingroom.memory_store import MemoryStore
from gatekeeper.waitingroom.testing import build


async def _emitted(emitter: BufferedEmitter) -> list[tuple[str, dict[str, object], str | None]]:
    outbox = emitter.outbox
    await emitter.flush()
    got = await outbox.read("t", 1000, 0)
    await outbox.ack([i for i, _ in got])
    return [(e.type, e.data, e.subject) for _, e in got]


def _emitter() -> BufferedEmitter:
    return BufferedEmitter(MemoryOutbox())


async def test_a_spike_is_reported_once_per_cooldown_per_key_and_route(
    fake_clock: FakeClock,
) -> None:
    """Threshold 429s inside the window -> one event for the route and one for the key; more
    429s within the cooldown -> nothing; after the cooldown, again."""
    emitter = _emitter()
    spikes = SpikeDetector(emitter, fake_clock, threshold=3, window=10, cooldown=60)
    for _ in range(2):
        spikes.limited("api", "key:k1")
    assert await _emitted(emitter) == []
    for _ in range(5):
        spikes.limited("api", "key:k1")
    got = await _emitted(emitter)
    assert [(d["scope"], d["name"], d["count"]) for _, d, _ in got] == [
        ("route", "api", 3),
        ("key", "key:k1", 3),
    ]
    assert {t for t, _, _ in got} == {"ratelimit.spike"}
    fake_clock.advance(61)
    for _ in range(3):
        spikes.limited("api", None)
    assert [s for _, _, s in await _emitted(emitter)] == ["route:api"]


async def test_spread_out_429s_are_not_a_spike(fake_clock: FakeClock) -> None:
    """Fewer than the threshold per window, forever: no event."""
    emitter = _emitter()
    spikes = SpikeDetector(emitter, fake_clock, threshold=3, window=10, cooldown=60)
    for _ in range(10):
        spikes.limited("api", "key:k1")
        spikes.limited("api", "key:k1")
        fake_clock.advance(10)
    assert await _emitted(emitter) == []


async def test_the_limiter_breaker_reports_degraded_then_recovered(fake_clock: FakeClock) -> None:
    """Opening (from closed) -> limiter.degraded once; closing -> limiter.recovered."""
    breaker = Breaker(failure_threshold=2, cooldown=1.0, clock=fake_clock)
    breaker.events = emitter = _emitter()
    breaker.failure()
    breaker.failure()
    fake_clock.advance(1.5)
    assert breaker.allow()
    breaker.failure()  # the probe fails: open again, no second "degraded"
    fake_clock.advance(1.5)
    assert breaker.allow()
    breaker.success()
    assert [t for t, _, _ in await _emitted(emitter)] == ["limiter.degraded", "limiter.recovered"]


async def test_a_pool_reports_endpoint_health_and_breakers(fake_clock: FakeClock) -> None:
    """Health: down after the threshold, up again; breaker: opened, closed (not half-open)."""
    ep = Endpoint("10.0.0.1", 8080)
    pool = UpstreamPool(
        "api",
        [ep],
        health=HealthCheckConfig(unhealthy_threshold=2, healthy_threshold=1),
        breaker=BreakerConfig(consecutive_failures=2, open_for=5, min_requests=100),
        clock=fake_clock,
    )
    pool.events = emitter = _emitter()
    assert pool.health is not None
    pool.health.record(ep, False)
    pool.health.record(ep, False)
    pool.health.record(ep, True)
    now = fake_clock.monotonic()
    for _ in range(2):
        ep.breaker.on_start(now)
        ep.breaker.record(now, False)
    later = now + 6
    assert ep.breaker.allows(later)
    ep.breaker.on_start(later)
    ep.breaker.record(later, True)
    got = await _emitted(emitter)
    assert [t for t, _, _ in got] == [
        "upstream.down",
        "upstream.up",
        "breaker.opened",
        "breaker.closed",
    ]
    assert got[0][1] == {"pool": "api", "endpoint": ep.address}


async def test_the_admission_worker_reports_queueing_and_drained(fake_clock: FakeClock) -> None:
    """Someone waits -> waitingroom.queueing (once); the queue admitted empty -> drained."""
    repository = MemoryConfigRepository(["shop"])
    await repository.save("shop", TenantConfig(admission_limit=1))
    room = build(MemoryStore(), repository, fake_clock)
    room.worker.events = emitter = _emitter()
    await room.service.enqueue("shop", "a")
    await room.service.enqueue("shop", "b")
    await room.worker.run_once()  # admits a; b waits
    await room.worker.run_once()
    fake_clock.advance(5)
    await room.worker.run_once()  # admits b
    got = await _emitted(emitter)
    assert [(t, s) for t, _, s in got] == [
        ("waitingroom.queueing", "shop"),
        ("waitingroom.drained", "shop"),
    ]
