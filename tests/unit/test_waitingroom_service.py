"""The service on the in-process store: tokens, ETAs, the gate, SSE, coalescing, per-IP limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Hashable, Sequence

import pytest

from gatekeeper.errors import AuthenticationError, RateLimitExceeded, StorageError, TokenError
from gatekeeper.limits import Limiter, storage_from_url
from gatekeeper.observability.metrics import Metrics
from gatekeeper.testing import FakeClock
from gatekeeper.waitingroom.coalesce import Coalescer
from gatekeeper.waitingroom.config import TenantConfig, WaitingRoomSettings
from gatekeeper.waitingroom.config_repository import MemoryConfigRepository
from gatekeeper.waitingroom.gate import WaitingRoomGate, cookie_name
from gatekeeper.waitingroom.memory_store import MemoryStore
from gatekeeper.waitingroom.service import STATS_TTL, InvalidRequest, eta_for
from gatekeeper.waitingroom.sse import status_events
from gatekeeper.waitingroom.store import QueueStats
from gatekeeper.waitingroom.testing import WaitingRoom, build

T = "shop"


@pytest.fixture
async def room(fake_clock: FakeClock) -> WaitingRoom:
    """A waiting room admitting one user per 5 s tick."""
    repository = MemoryConfigRepository([T])
    await repository.save(T, TenantConfig(admission_limit=1))
    return build(MemoryStore(), repository, fake_clock)


async def admit(room: WaitingRoom, clock: FakeClock) -> None:
    clock.advance(5)
    await room.worker.run_once()


async def test_enqueue_status_verify_finish(room: WaitingRoom, fake_clock: FakeClock) -> None:
    """The whole life of one place: queued, ready, verified, finished, refused afterwards."""
    first = await room.service.enqueue(T, "a")
    second = await room.service.enqueue(T, "b")
    assert (first.position, second.position) == (1, 2)
    assert second.message == "User enqueued successfully."
    dup = await room.service.enqueue(T, "b")
    assert (dup.jwt, dup.position, dup.message) == ("", 2, "User is already in the queue.")
    await admit(room, fake_clock)
    status = await room.service.status(T, first.jwt)
    assert status.ready
    assert status.position is None
    assert await room.service.verify(T, first.jwt)
    assert not await room.service.verify(T, second.jwt)
    assert await room.service.finish(T, first.jwt)
    assert not await room.service.verify(T, first.jwt)
    assert not await room.service.finish(T, first.jwt)


async def test_status_renews_expired_tokens_only(room: WaitingRoom, fake_clock: FakeClock) -> None:
    """A current token comes back unchanged; an expired authentic one is replaced."""
    token = (await room.service.enqueue(T, "a")).jwt
    assert (await room.service.status(T, token)).jwt_token == token
    fake_clock.advance(125)
    renewed = (await room.service.status(T, token)).jwt_token
    assert renewed != token
    assert room.service.codec.decode(renewed, T, now=fake_clock.now()).ticket == 1
    with pytest.raises(TokenError):
        await room.service.verify(T, token)


async def test_unknown_tenant_and_bad_input(room: WaitingRoom) -> None:
    """Unknown tenant -> AuthenticationError; missing or huge user id -> InvalidRequest."""
    with pytest.raises(AuthenticationError):
        await room.service.enqueue("nope", "a")
    with pytest.raises(AuthenticationError):
        await room.service.status("", "x")
    for user in (None, "", "u" * 300):
        with pytest.raises(InvalidRequest):
            await room.service.enqueue(T, user)


def test_eta_range_from_schedule_and_measured_ticks() -> None:
    """ETA low end: full-rate ticks; high end: the measured (slower) tick period + 25%."""
    settings = WaitingRoomSettings()
    config = TenantConfig(admission_limit=10, admission_frequency=5)
    now = 1000.0
    on_time = QueueStats(100, 0, 0, 100, now + 2, ((985.0, 10), (990.0, 10), (995.0, 10)))
    eta = eta_for(25, on_time, config, settings, now)
    assert (eta.low, eta.high) == (12, 15)  # next tick in 2 s, then 2 more ticks
    assert eta.low <= eta.seconds <= eta.high
    slow = QueueStats(100, 0, 0, 100, now + 2, ((960.0, 10), (980.0, 10), (1000.0, 10)))
    assert eta_for(25, slow, config, settings, now).high == 52  # 2 + 2 * 20 * 1.25
    assert eta_for(1, on_time, config, settings, now).poll_after == settings.poll_min_seconds
    far = eta_for(100_000, on_time, config, settings, now)
    assert far.poll_after == min(settings.poll_max_seconds, settings.grace_seconds / 4)


async def test_gate_redirects_without_ready_token_and_allows_with_one(
    room: WaitingRoom, fake_clock: FakeClock
) -> None:
    """No token or a queued one -> redirect to the waiting page with the way back; ready ->
    allowed, from the cookie, the jwt header or the gk_jwt query parameter."""
    gate = WaitingRoomGate(room.service, T)
    decision = await gate.check({}, {}, "/buy?x=1")
    assert not decision.allowed
    assert decision.redirect == "/queue/wait?business_id=shop&return_to=%2Fbuy%3Fx%3D1"
    token = (await room.service.enqueue(T, "a")).jwt
    assert not (await gate.check({}, {cookie_name(T): token}, "/buy")).allowed
    await admit(room, fake_clock)
    assert (await gate.check({}, {cookie_name(T): token}, "/buy")).allowed
    assert (await gate.check({"jwt": token}, {}, "/buy")).allowed
    assert (await gate.check({}, {}, f"/buy?gk_jwt={token}")).allowed
    assert not (await gate.check({}, {cookie_name(T): "forged"}, "/buy")).allowed
    raw = [(b"host", b"x"), (b"cookie", f"a=1; {cookie_name(T)}={token}".encode())]
    assert (await gate.check_headers(raw, b"/buy")).allowed
    assert not (await gate.check_headers([(b"cookie", b"a=1")], b"/buy")).allowed
    foreign = await gate.check({}, {}, "https://evil.example/")
    assert foreign.redirect is not None
    assert foreign.redirect.endswith("return_to=%2F")


async def test_sse_streams_changes_until_ready(room: WaitingRoom, fake_clock: FakeClock) -> None:
    """The event stream sends a status event on each change and ends with ready."""
    await room.service.enqueue(T, "ahead")
    token = (await room.service.enqueue(T, "me")).jwt
    events: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def never() -> bool:
        return False

    async def consume() -> None:
        async for chunk in status_events(room.service, T, token, disconnected=never, interval=0.01):
            text = chunk.decode()
            if text.startswith("event: status"):
                await events.put(json.loads(text.split("data: ", 1)[1]))

    task = asyncio.create_task(consume())
    assert (await asyncio.wait_for(events.get(), 5))["position"] == 2
    await admit(room, fake_clock)
    assert (await asyncio.wait_for(events.get(), 5))["position"] == 1
    await admit(room, fake_clock)
    assert (await asyncio.wait_for(events.get(), 5))["ready"] is True
    await asyncio.wait_for(task, 5)  # the stream ends after ready
    assert events.empty()


async def test_coalescer_batches_one_loop_turn_and_propagates_errors() -> None:
    """Calls made in one loop turn share one run; a failing run fails each of its callers."""
    runs: list[list[int]] = []

    async def run(group: Hashable, items: Sequence[int]) -> list[int]:
        runs.append(list(items))
        if group == "bad":
            raise ValueError("boom")
        return [i * 2 for i in items]

    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=4)
    results = await asyncio.gather(*(coalescer.submit("g", i) for i in range(6)))
    assert results == [0, 2, 4, 6, 8, 10]
    assert sorted(len(r) for r in runs) == [2, 4]
    with pytest.raises(ValueError, match="boom"):
        await coalescer.submit("bad", 1)


async def test_per_ip_limits_use_the_tenant_config(fake_clock: FakeClock) -> None:
    """Past ip_enqueue_limit the service raises RateLimitExceeded with a retry time; other
    IPs are unaffected."""
    repository = MemoryConfigRepository([T])
    await repository.save(T, TenantConfig(ip_enqueue_limit=2, ip_enqueue_limit_interval=60))
    limiter = Limiter(storage_from_url("memory://"))
    room = build(MemoryStore(), repository, fake_clock, limiter=limiter)
    await room.service.enqueue(T, "a", "10.0.0.1")
    await room.service.enqueue(T, "b", "10.0.0.1")
    with pytest.raises(RateLimitExceeded) as info:
        await room.service.enqueue(T, "c", "10.0.0.1")
    assert info.value.decision.retry_after >= 1
    await room.service.enqueue(T, "c", "10.0.0.2")
    await limiter.aclose()


async def test_status_poll_limit_decides_before_the_token_and_the_queue(
    fake_clock: FakeClock,
) -> None:
    """The limit check and the queue read go out together, but a poll over the limit is a
    429 whatever its token, and leaves nothing behind (no warning, no stray exception)."""
    repository = MemoryConfigRepository([T])
    await repository.save(
        T, TenantConfig(ip_status_polling_limit=1, ip_status_polling_limit_interval=60)
    )
    limiter = Limiter(storage_from_url("memory://"))
    room = build(MemoryStore(), repository, fake_clock, limiter=limiter)
    token = (await room.service.enqueue(T, "a", "10.0.0.1")).jwt
    assert (await room.service.status(T, token, "10.0.0.1")).position == 1
    with pytest.raises(RateLimitExceeded):
        await room.service.status(T, token, "10.0.0.1")
    with pytest.raises(RateLimitExceeded):
        await room.service.status(T, "not-a-token", "10.0.0.1")
    with pytest.raises(TokenError):
        await room.service.status(T, "not-a-token", "10.0.0.2")  # within its own limit
    await limiter.aclose()


async def test_worker_records_metrics(fake_clock: FakeClock) -> None:
    """Admissions, abandonment and queue length reach the Prometheus metrics."""
    metrics = Metrics()
    room = build(MemoryStore(), MemoryConfigRepository([T]), fake_clock)
    room.worker.metrics = metrics
    for i in range(12):
        await room.service.enqueue(T, f"u{i}")
    await room.worker.run_once()
    text = metrics.render().decode()
    assert 'gatekeeper_waitingroom_admissions_total{tenant="shop"} 10.0' in text
    assert 'gatekeeper_waitingroom_queue_length{tenant="shop"} 2.0' in text


class CountingStore(MemoryStore):
    """The in-process store, counting its ``stats`` reads."""

    def __init__(self) -> None:
        super().__init__()
        self.stats_reads = 0

    async def stats(self, tenant: str, now: float) -> QueueStats:
        self.stats_reads += 1
        await asyncio.sleep(0)  # a round trip: concurrent callers arrive meanwhile
        return await super().stats(tenant, now)


async def test_queue_stats_are_read_once_per_expiry_by_concurrent_requests(
    fake_clock: FakeClock,
) -> None:
    """The ETA's queue stats: one read for a burst of requests, and when the cached stats
    expire one read again, the other requests of that moment answering from the old ones."""
    store = CountingStore()
    room = build(store, MemoryConfigRepository([T]), fake_clock)
    answers = await asyncio.gather(*(room.service.enqueue(T, f"u{i}") for i in range(20)))
    assert store.stats_reads == 1
    assert all(a.eta is not None for a in answers)
    fake_clock.advance(STATS_TTL + 0.5)
    polls = await asyncio.gather(*(room.service.status(T, a.jwt) for a in answers))
    assert store.stats_reads == 2
    assert all(p.eta is not None for p in polls)
    assert [p.position for p in polls] == list(range(1, 21))


async def test_a_failed_stats_read_fails_its_callers_and_is_tried_again(
    fake_clock: FakeClock,
) -> None:
    store = CountingStore()
    room = build(store, MemoryConfigRepository([T]), fake_clock)
    real = store.stats

    async def broken(tenant: str, now: float) -> QueueStats:
        raise StorageError("down")

    store.stats = broken  # type: ignore[method-assign]
    with pytest.raises(StorageError):
        await room.service.enqueue(T, "a")
    store.stats = real  # type: ignore[method-assign]
    assert (await room.service.enqueue(T, "b")).eta is not None


async def test_per_ip_limits_follow_a_config_change(fake_clock: FakeClock) -> None:
    """Raising ip_status_polling_limit takes effect at once for an address already limited."""
    repository = MemoryConfigRepository([T])
    await repository.save(
        T, TenantConfig(ip_status_polling_limit=2, ip_status_polling_limit_interval=60)
    )
    limiter = Limiter(storage_from_url("memory://"))
    room = build(MemoryStore(), repository, fake_clock, limiter=limiter)
    token = (await room.service.enqueue(T, "a")).jwt
    for _ in range(2):
        await room.service.status(T, token, "10.0.0.1")
    with pytest.raises(RateLimitExceeded):
        await room.service.status(T, token, "10.0.0.1")
    await room.service.update_config(T, {"ip_status_polling_limit": 5})
    await room.service.status(T, token, "10.0.0.1")
    await limiter.aclose()
