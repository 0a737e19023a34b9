"""The durable outbox between the emitters and the delivering leader, and its in-process form.

Protocol (:class:`Outbox`), as the delivery loop uses it:

1. ``append(events)`` from every replica's flusher.
2. ``lead(owner, ttl)``: take or renew the delivery lease; only the holder delivers.
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

    async def aclose(self) -> None: ...


class MemoryOutbox:
    """The in-process outbox: a queue with unacknowledged entries redelivered first."""

    def __init__(self, *, keep_deliveries: int = 1000, keep_dead: int = 10_000) -> None:
        self._queue: deque[tuple[str, Event]] = deque()
        self._inflight: dict[str, Event] = {}
        self._arrived = asyncio.Event()
        self._seq = 0
        self._deliveries: deque[dict[str, Any]] = deque(maxlen=keep_deliveries)
        self._dead: deque[dict[str, Any]] = deque(maxlen=keep_dead)

    async def append(self, events: Sequence[Event]) -> None:
        for event in events:
            self._seq += 1
            self._queue.append((str(self._seq), event))
        self._arrived.set()

    async def lead(self, owner: str, ttl: float) -> bool:
        return True

    async def resign(self, owner: str) -> None:
        return None

    async def read(self, owner: str, count: int, wait: float) -> list[tuple[str, Event]]:
        if self._inflight:
            # What a failed pass left unacknowledged goes again first.
            return list(self._inflight.items())[:count]
        if not self._queue:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait)
        out: list[tuple[str, Event]] = []
        while self._queue and len(out) < count:
            entry_id, event = self._queue.popleft()
            self._inflight[entry_id] = event
            out.append((entry_id, event))
        return out

    async def ack(self, entry_ids: Sequence[str]) -> None:
        for entry_id in entry_ids:
            self._inflight.pop(entry_id, None)

    async def dead_letter(self, records: Sequence[dict[str, Any]]) -> None:
        self._dead.extendleft(records)

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        return list(self._dead)[:limit]

    async def replay(self, limit: int) -> int:
        taken = [self._dead.pop() for _ in range(min(limit, len(self._dead)))]
        events = [Event.from_json(json.dumps(d["event"])) for d in taken if "event" in d]
        await self.append(events)
        return len(events)

    async def record(self, records: Sequence[dict[str, Any]]) -> None:
        self._deliveries.extendleft(records)

    async def deliveries(self, limit: int) -> list[dict[str, Any]]:
        return list(self._deliveries)[:limit]

    async def backlog(self) -> int:
        return len(self._queue) + len(self._inflight)

    async def aclose(self) -> None:
        return None
