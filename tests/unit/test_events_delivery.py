"""The delivery loop on the in-process outbox: retries with backoff, dead letters after N
tries, acknowledgement only when every sink is done, and a batch abandoned on a lost lease."""

from __future__ import annotations

from collections.abc import Sequence

from gatekeeper.events.delivery import Deliverer, DeliveryOptions
from gatekeeper.events.model import Event
from gatekeeper.events.outbox import MemoryOutbox
from gatekeeper.events.sinks.base import Attempt


class _Flaky:
    """A sink of our own protocol that fails its first ``failures`` tries of each event."""

    def __init__(self, name: str, failures: int) -> None:
        self.name = name
        self.failures = failures
        self.tries: dict[str, int] = {}
        self.delivered: list[str] = []

    async def plan(self, events: Sequence[Event]) -> list[Attempt]:
        return [Attempt(self.name, e) for e in events]

    async def send(self, attempts: Sequence[Attempt]) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        for a in attempts:
            n = self.tries[a.event.id] = self.tries.get(a.event.id, 0) + 1
            if n <= self.failures:
                out.append(ConnectionError(f"try {n} refused"))
            else:
                self.delivered.append(a.event.id)
                out.append(None)
        return out

    async def aclose(self) -> None:
        return None


class _Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def _outbox_with(n: int) -> tuple[MemoryOutbox, list[Event]]:
    outbox = MemoryOutbox()
    events = [Event("test", {"i": i}, 0.0, "t") for i in range(n)]
    await outbox.append(events)
    return outbox, events


async def test_failures_are_retried_with_growing_backoff_then_delivered() -> None:
    """Two refusals, then success: three tries, two growing waits, the batch acknowledged."""
    outbox, events = await _outbox_with(3)
    sink, sleeps = _Flaky("s", failures=2), _Sleeps()
    options = DeliveryOptions(max_attempts=5, backoff_base=1.0, backoff_max=100.0)
    deliverer = Deliverer(outbox, [sink], options, sleep=sleeps)
    assert await deliverer.run_once(wait=0) == 3
    assert sorted(sink.delivered) == sorted(e.id for e in events)
    assert len(sleeps.waits) == 2
    assert 0.5 <= sleeps.waits[0] <= 1.0
    assert 1.0 <= sleeps.waits[1] <= 2.0
    assert await outbox.backlog() == 0
    records = await outbox.deliveries(100)
    assert [r["status"] for r in records].count("failed") == 6
    assert [r["status"] for r in records].count("delivered") == 3


async def test_after_max_attempts_the_event_is_dead_lettered_and_acknowledged() -> None:
    """A sink that never accepts: N tries, then a dead letter naming the target and error;
    the other sink still got the event once."""
    outbox, events = await _outbox_with(1)
    broken, fine = _Flaky("broken", failures=99), _Flaky("fine", failures=0)
    options = DeliveryOptions(max_attempts=3, backoff_base=0.01)
    deliverer = Deliverer(outbox, [broken, fine], options, sleep=_Sleeps())
    assert await deliverer.run_once(wait=0) == 1
    assert broken.tries[events[0].id] == 3
    assert fine.delivered == [events[0].id]
    dead = await outbox.dead_letters(10)
    assert len(dead) == 1
    assert dead[0]["target"] == "broken"
    assert dead[0]["attempts"] == 3
    assert dead[0]["event"]["id"] == events[0].id
    assert "try 3 refused" in dead[0]["error"]
    assert await outbox.backlog() == 0


async def test_a_leader_that_loses_its_lease_leaves_the_batch_unacknowledged() -> None:
    """Lease lost between retries: the batch is not acknowledged, and is read again."""

    class _Losing(MemoryOutbox):
        held = True

        async def lead(self, owner: str, ttl: float) -> bool:
            return self.held

    outbox = _Losing()
    await outbox.append([Event("test", {}, 0.0, "t")])
    sink = _Flaky("s", failures=1)

    async def lose(seconds: float) -> None:
        outbox.held = False

    deliverer = Deliverer(outbox, [sink], DeliveryOptions(backoff_base=0.01), sleep=lose)
    assert await deliverer.run_once(wait=0) == 0
    assert await outbox.backlog() == 1
    assert deliverer.leader is False
    outbox.held = True
    assert await deliverer.run_once(wait=0) == 1
    assert len(sink.delivered) == 1


async def test_dead_letters_replayed_are_delivered_with_their_ids() -> None:
    """Dead-lettered while the target was down; replayed once it is back: delivered, same id,
    and the dead-letter list is empty."""
    outbox, events = await _outbox_with(2)
    sink = _Flaky("s", failures=2)
    deliverer = Deliverer(outbox, [sink], DeliveryOptions(max_attempts=2), sleep=_Sleeps())
    assert await deliverer.run_once(wait=0) == 2
    assert len(await outbox.dead_letters(10)) == 2
    assert await outbox.replay(10) == 2
    assert await outbox.dead_letters(10) == []
    assert await deliverer.run_once(wait=0) == 2
    assert sink.delivered == [e.id for e in events]
