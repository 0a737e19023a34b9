"""A small read-through cache with a time to live and one load per key at a time.

Tenant configs and tenant keys are read on every request but change rarely: each replica keeps
them ``ttl`` seconds (a change reaches every replica within that time, with no query on the hot
path). Misses are cached too (``None``), so a flood of unknown ids cannot hammer the database,
and the cache is bounded, so that random ids cannot grow it without limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from gatekeeper.types import Clock

__all__ = ["ReadThrough"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadThrough(Generic[K, V]):
    """Values of ``load(key)`` kept ``ttl`` seconds (``clock.monotonic``)."""

    def __init__(
        self,
        load: Callable[[K], Awaitable[V | None]],
        clock: Clock,
        ttl: float,
        *,
        max_entries: int = 10_000,
    ) -> None:
        self.load = load
        self.clock = clock
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V | None]] = {}
        self._loading: dict[K, asyncio.Future[V | None]] = {}

    def fresh(self, key: K) -> V | None:
        """The cached value if still fresh, else None (then :meth:`get`). No coroutine: the
        hot path's usual case."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self.clock.monotonic():
            return entry[1]
        return None

    async def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self.clock.monotonic():
            return entry[1]
        # One load per key at a time: when an entry expires under load, every request of that
        # moment would otherwise run its own query (a stampede on each expiry).
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(self._load(key))
            self._loading[key] = loading
            loading.add_done_callback(lambda done: self._loaded(key, done))
        # Shielded: a cancelled caller does not cancel the load the others wait for.
        return await asyncio.shield(loading)

    async def _load(self, key: K) -> V | None:
        value = await self.load(key)
        self.put(key, value)
        return value

    def _loaded(self, key: K, done: asyncio.Future[V | None]) -> None:
        if self._loading.get(key) is done:
            del self._loading[key]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter got it already

    def put(self, key: K, value: V | None) -> None:
        """Cache ``value`` (a change made here is seen here at once)."""
        if len(self._entries) >= self.max_entries and key not in self._entries:
            self._entries.clear()
        self._entries[key] = (self.clock.monotonic() + self.ttl, value)

    def forget(self, key: K) -> None:
        """Drop ``key``: the next read loads it again."""
        self._entries.pop(key, None)
