"""Request coalescing: one upstream fetch for N concurrent misses of the same key.

The first miss for a key becomes the *leader* and fetches; later misses *follow*: they wait
(bounded) for the leader's outcome. A leader that stored a response hands the entry to its
followers directly (no store round trip, so this works even when the store refuses the entry);
a leader that failed, or whose response could not be shared, hands ``None`` and every follower
fetches on its own. Coalescing is per process: replicas each send at most one fetch per key.

A request that looked the store up *before* a leader stored its entry, but joins *after* that
leader finished, would start a second fetch. To close that window every lookup takes a
ticket, and the last entries published are kept with the ticket count at their publication:
a new leader first takes a published entry newer than its own lookup.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatekeeper.gateway.cache.entry import CacheEntry

__all__ = ["Coalescer", "Flight"]


class Flight:
    """One in-progress fetch that followers may wait for."""

    __slots__ = ("_coalescer", "_future", "followers", "key")

    def __init__(self, coalescer: Coalescer, key: str) -> None:
        self._coalescer = coalescer
        self.key = key
        self._future: asyncio.Future[CacheEntry | None] = asyncio.get_running_loop().create_future()
        self.followers = 0

    @property
    def done(self) -> bool:
        """Whether the leader has finished."""
        return self._future.done()

    def finish(self, entry: CacheEntry | None) -> None:
        """Leader only: publish the outcome (``None``: followers fetch themselves). Idempotent."""
        if not self._future.done():
            self._future.set_result(entry)
            if entry is not None:
                self._coalescer._publish(self.key, entry)
        self._coalescer._forget(self)

    async def wait(self, timeout: float) -> CacheEntry | None:  # noqa: ASYNC109
        """Follower: the leader's entry, or ``None`` on its failure or after ``timeout``."""
        self.followers += 1
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._future)
        except TimeoutError:
            return None


class Coalescer:
    """Tracks the fetches in flight, by key."""

    def __init__(self, recent: int = 256) -> None:
        self._flights: dict[str, Flight] = {}
        self._tickets = 0
        self._recent: dict[str, tuple[int, CacheEntry]] = {}
        self._recent_max = recent

    def __len__(self) -> int:
        return len(self._flights)

    def ticket(self) -> int:
        """Taken before a store lookup: orders lookups against published entries."""
        self._tickets += 1
        return self._tickets

    def published_since(self, key: str, ticket: int) -> CacheEntry | None:
        """An entry a leader published for ``key`` after the lookup holding ``ticket``."""
        recent = self._recent.get(key)
        if recent is None or recent[0] <= ticket:
            return None
        return recent[1]

    def forget_published(self, prefix: str) -> None:
        """Drop published entries whose key starts with ``prefix`` (the URI was invalidated)."""
        for key in [k for k in self._recent if k.startswith(prefix)]:
            del self._recent[key]

    def _publish(self, key: str, entry: CacheEntry) -> None:
        self._tickets += 1
        self._recent.pop(key, None)
        self._recent[key] = (self._tickets, entry)
        if len(self._recent) > self._recent_max:  # dicts keep insertion order: drop the oldest
            del self._recent[next(iter(self._recent))]

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (and so must ``finish`` it)."""
        flight = self._flights.get(key)
        if flight is not None and not flight.done:
            return flight, False
        flight = Flight(self, key)
        self._flights[key] = flight
        return flight, True

    def _forget(self, flight: Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
