"""The emitter: emit only buffers; the flusher moves events to the outbox, keeping their ids
when the outbox refuses them for a while."""

from __future__ import annotations

from collections.abc import Sequence

from gatekeeper.errors import StorageError
from gatekeeper.events.emitter import BufferedEmitter
from gatekeeper.events.model import Event
from gatekeeper.events.outbox import MemoryOutbox
from gatekeeper.types import EventEmitter


class _Refusing(MemoryOutbox):
    """The in-process outbox, told to fail its appends (as Redis down would)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def append(self, events: Sequence[Event]) -> None:
        if self.down:
            raise StorageError("down")
        await super().append(events)


async def test_emit_buffers_and_flush_appends_to_the_outbox() -> None:
    """Nothing reaches the outbox until flush; then every event does, in order."""
    outbox = MemoryOutbox()
    emitter = BufferedEmitter(outbox, source="gk/test")
    typed: EventEmitter = emitter  # (mypy checks it satisfies the protocol)
    assert typed is emitter
    emitter.emit("key.banned", {"key_id": "k1", "seconds": 300}, subject="key:k1")
    emitter.emit("ip.banned", {"ip": "10.0.0.1", "seconds": 60})
    assert await outbox.backlog() == 0
    assert await emitter.flush() == 2
    got = await outbox.read("me", 10, 0)
    assert [e.type for _, e in got] == ["key.banned", "ip.banned"]
    assert got[0][1].subject == "key:k1"
    assert got[0][1].source == "gk/test"


async def test_a_full_buffer_drops_and_counts_instead_of_growing() -> None:
    """Past its capacity the buffer drops new events and counts them."""
    emitter = BufferedEmitter(MemoryOutbox(), capacity=100)
    for i in range(150):
        emitter.emit("test", {"i": i})
    assert len(emitter) == 100
    assert emitter.dropped == 50


async def test_events_held_while_the_outbox_is_down_keep_their_ids() -> None:
    """A refused flush keeps the built events; the next flush appends them with the same ids."""
    outbox = _Refusing()
    emitter = BufferedEmitter(outbox)
    emitter.emit("test", {"n": 1})
    assert await emitter.flush() == 0
    held = [e.id for e in emitter._unsent]
    emitter.emit("test", {"n": 2})
    outbox.down = False
    assert await emitter.flush() == 2
    got = await outbox.read("me", 10, 0)
    assert got[0][1].id == held[0]
    assert [e.data["n"] for _, e in got] == [1, 2]
