"""The emitter: what the request path calls. It appends to an in-process buffer, nothing more.

:meth:`BufferedEmitter.emit` costs one ``deque.append`` of a tuple and a clock reading (well
under a microsecond); it never waits, never does I/O and never raises. The flusher
(:meth:`BufferedEmitter.flush`, called by the events component's background task every
``flush_interval``) turns what was buffered into :class:`~gatekeeper.events.model.Event`\\ s
(the idempotency id is assigned here) and appends them to the durable outbox. If the outbox
cannot take them (Redis down), they stay in the flusher's hands and are offered again on the
next tick; a buffer that fills up meanwhile drops the newest events and counts them.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from gatekeeper.errors import GatekeeperError
from gatekeeper.events.model import Event

if TYPE_CHECKING:
    from gatekeeper.events.outbox import Outbox

__all__ = ["BufferedEmitter", "replica_source"]

_log = structlog.get_logger("gatekeeper.events")
_now = time.time


def replica_source() -> str:
    """The CloudEvents ``source`` of this process: ``gatekeeper/<host>/<pid>``."""
    return f"gatekeeper/{socket.gethostname()}/{os.getpid()}"


class BufferedEmitter:
    """Implements :class:`gatekeeper.types.EventEmitter` over a bounded in-process buffer."""

    def __init__(
        self, outbox: Outbox, *, capacity: int = 100_000, source: str | None = None
    ) -> None:
        self.outbox = outbox
        self.capacity = capacity
        self.source = source or replica_source()
        self.dropped = 0
        self.flushed = 0
        self._buffer: deque[tuple[str, Mapping[str, Any], str | None, float]] = deque()
        self._unsent: list[Event] = []  # built, not yet taken by the outbox (kept their ids)

    def emit(self, type: str, data: Mapping[str, Any], *, subject: str | None = None) -> None:
        """Buffer one event (the request path's whole cost of reporting it)."""
        buffer = self._buffer
        if len(buffer) < self.capacity:
            buffer.append((type, data, subject, _now()))
        else:
            self.dropped += 1

    def enqueue(self, type: str, data: Mapping[str, Any], *, subject: str | None = None) -> str:
        """Buffer one event built now; its id (the admin's test event answers with it)."""
        event = Event(type, dict(data), time.time(), self.source, subject)
        self._unsent.append(event)
        return event.id

    def __len__(self) -> int:
        return len(self._buffer) + len(self._unsent)

    async def flush(self, *, max_batch: int = 1000) -> int:
        """Move everything buffered to the outbox; how many events it took. Outbox failures
        are logged and retried on the next call (never raised: the flusher keeps running)."""
        buffer = self._buffer
        taken = 0
        while buffer or self._unsent:
            if not self._unsent:
                source = self.source
                built: list[Event] = []
                while buffer and len(built) < max_batch:
                    type_, data, subject, at = buffer.popleft()
                    built.append(Event(type_, dict(data), at, source, subject))
                self._unsent = built
            # (Taken out first: enqueue may add to _unsent while the append waits.)
            batch, self._unsent = self._unsent, []
            try:
                await self.outbox.append(batch)
            except GatekeeperError as exc:
                self._unsent = batch + self._unsent
                _log.warning("events_outbox_unavailable", error=str(exc), held=len(self))
                return taken
            taken += len(batch)
            self.flushed += len(batch)
        return taken
