"""The durable outbox between the emitters and the delivering leader, and its in-process form.

Protocol (:class:`Outbox`), as the delivery loop uses it:

1. ``append(events)`` from every replica's flusher.
2. ``lead(owner, ttl)``: take or renew the delivery lease; only the holder delivers. Each
   sink reads through its own view, ``group(sink.name)``: its own consumer group and lease,
   so that a sink that is down holds back no other sink.
3. ``read(owner, count, wait)``: entries to deliver, first those left unacknowledged by a
   previous leader (claimed from it), then new ones. Each is ``(entry_id, event)``.
4. ``ack(entry_ids)`` once every sink delivered or dead-lettered the event. An entry read but
   never acknowledged (its reader was killed) is read again by the next leader: at least once.
5. ``dead_letter``/``dead_letters``, ``record``/``deliveries``: the admin view (bounded lists);
   ``replay``: the oldest dead letters back into the outbox (same ids) once the target is back.

:class:`MemoryOutbox` is the embedded mode's (no Redis): one process, which always leads. It is
durable only as long as the process; ``gatekeeper.events.redis_outbox`` is the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from gatekeeper.events.model import Event

__all__ = ["MemoryOutbox", "Outbox"]


class Outbox(Protocol):
    """Where emitted events wait until the leader delivered them."""

    async def append(self, events: Sequence[Event]) -> None: ...

    async def lead(self, owner: str, ttl: float) -> bool: ...

    async def resign(self, owner: str) -> None: ...

    async def read(self, owner: str, count: int, wait: float) -> list[tuple[str, Event]]: ...

    async def ack(self, entry_ids: Sequence[str]) -> None: ...

    async def dead_letter(self, records: Sequence[dict[str, Any]]) -> None: ...

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]: ...

    async def replay(self, limit: int) -> int: ...

    async def record(self, records: Sequence[dict[str, Any]]) -> None: ...

    async def deliveries(self, limit: int) -> list[dict[str, Any]]: ...

    async def backlog(self) -> int: ...

    def group(self, name: str) -> Outbox: ...

    async def prepare(self) -> None: ...

    async def aclose(self) -> None: ...


class _Group:
    """One consumer group's queue of the in-process outbox."""

    def __init__(self) -> None:
        self.queue: deque[tuple[str, Event]] = deque()
        self.inflight: dict[str, Event] = {}
        self.arrived = asyncio.Event()


class MemoryOutbox:
    """The in-process outbox: every group (one per sink) gets every event; what a group read
    and did not acknowledge is read again first."""

    def __init__(
        self,
        *,
        keep_deliveries: int = 1000,
        keep_dead: int = 10_000,
        group: str | None = "delivery",
        _shared: MemoryOutbox | None = None,
    ) -> None:
        root = _shared or self
        self._root = root
        self.group_name = group
        if _shared is None:
            self._groups: dict[str, _Group] = {}
            self._seq = 0
            self._deliveries: deque[dict[str, Any]] = deque(maxlen=keep_deliveries)
            self._dead: deque[dict[str, Any]] = deque(maxlen=keep_dead)
        # (None: an outbox only appended to, whose groups are its group() views.)
        self._state = root._groups.setdefault(group, _Group()) if group is not None else None

    def group(self, name: str) -> MemoryOutbox:
        """The same outbox read by consumer group ``name`` (which gets every event appended
        from now on, independently of the other groups)."""
        return MemoryOutbox(group=name, _shared=self._root)

    async def append(self, events: Sequence[Event]) -> None:
        root = self._root
        for event in events:
            root._seq += 1
            entry = (str(root._seq), event)
            for state in root._groups.values():
                state.queue.append(entry)
        for state in root._groups.values():
            state.arrived.set()

    async def prepare(self) -> None:
        return None

    async def lead(self, owner: str, ttl: float) -> bool:
        return True

    async def resign(self, owner: str) -> None:
        return None

    async def read(self, owner: str, count: int, wait: float) -> list[tuple[str, Event]]:
        state = self._state
        assert state is not None, "read through a group() of this outbox"
        if state.inflight:
            # What a failed pass left unacknowledged goes again first.
            return list(state.inflight.items())[:count]
        if not state.queue:
            state.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.arrived.wait(), wait)
        out: list[tuple[str, Event]] = []
        while state.queue and len(out) < count:
            entry_id, event = state.queue.popleft()
            state.inflight[entry_id] = event
            out.append((entry_id, event))
        return out

    async def ack(self, entry_ids: Sequence[str]) -> None:
        state = self._state
        assert state is not None, "acknowledge through a group() of this outbox"
        for entry_id in entry_ids:
            state.inflight.pop(entry_id, None)

    async def dead_letter(self, records: Sequence[dict[str, Any]]) -> None:
        self._root._dead.extendleft(records)

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        return list(self._root._dead)[:limit]

    async def replay(self, limit: int) -> int:
        dead = self._root._dead
        taken = [dead.pop() for _ in range(min(limit, len(dead)))]
        events = [Event.from_json(json.dumps(d["event"])) for d in taken if "event" in d]
        await self.append(events)
        return len(events)

    async def record(self, records: Sequence[dict[str, Any]]) -> None:
        self._root._deliveries.extendleft(records)

    async def deliveries(self, limit: int) -> list[dict[str, Any]]:
        return list(self._root._deliveries)[:limit]

    async def backlog(self) -> int:
        """Events this group has not acknowledged (the outbox itself: the furthest-behind
        group's)."""
        state = self._state
        if state is not None and self is not self._root:
            return len(state.queue) + len(state.inflight)
        groups = self._root._groups.values()
        return max((len(g.queue) + len(g.inflight) for g in groups), default=0)

    async def aclose(self) -> None:
        return None
