"""Rate-limit spikes: a key or a route answering more 429s than configured.

A counter per key and per route over a fixed window (``window`` seconds). When one reaches
``threshold`` 429s inside its window a ``ratelimit.spike`` event is emitted, then not again for
that key or route during ``cooldown``. The counts are this replica's (each replica reports the
spikes it sees); the accounting of answered requests calls :meth:`SpikeDetector.limited` at
the end of a loop turn, off the request's own path.
"""

from __future__ import annotations

from gatekeeper.types import Clock, EventEmitter

__all__ = ["SpikeDetector"]

# Above this many counters at a window's end the table is cleared (a bound on memory when
# every request carries a different key).
MAX_COUNTERS = 10_000


class SpikeDetector:
    """Counts 429s per key and per route; emits ``ratelimit.spike`` past the threshold."""

    def __init__(
        self,
        events: EventEmitter,
        clock: Clock,
        *,
        threshold: int = 100,
        window: float = 60.0,
        cooldown: float = 300.0,
    ) -> None:
        self.events = events
        self.clock = clock
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self._window_start = clock.monotonic()
        self._counts: dict[tuple[str, str], int] = {}
        self._reported: dict[tuple[str, str], float] = {}

    def limited(self, route: str | None, key: str | None) -> None:
        """Count one 429 of ``route`` (its name) for ``key`` (the limited subject)."""
        now = self.clock.monotonic()
        if now - self._window_start >= self.window:
            self._window_start = now
            self._counts.clear()
            if len(self._reported) > MAX_COUNTERS:
                self._reported.clear()
        if route is not None:
            self._count(("route", route), now)
        if key is not None:
            self._count(("key", key), now)

    def _count(self, which: tuple[str, str], now: float) -> None:
        counts = self._counts
        n = counts[which] = counts.get(which, 0) + 1
        if n < self.threshold or len(counts) > MAX_COUNTERS:
            return
        last = self._reported.get(which)
        if last is not None and now - last < self.cooldown:
            return
        self._reported[which] = now
        scope, name = which
        data = {"scope": scope, "name": name, "count": n, "window_seconds": self.window}
        # (A key is a subject already, "key:<id>"; a route is named "route:<name>".)
        self.events.emit(
            "ratelimit.spike", data, subject=name if scope == "key" else f"route:{name}"
        )
