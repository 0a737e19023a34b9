"""The in-process store: an LRU bounded by entry count and total bytes, with per-record TTLs.

The default store (``memory://``). Single event loop, no awaits inside an operation, so no lock
is needed. Expired records are dropped when touched and evicted first by the LRU order anyway.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, cast

from gatekeeper.errors import ConfigurationError

if TYPE_CHECKING:
    from gatekeeper.gateway.cache.entry import CacheEntry
    from gatekeeper.types import Clock

__all__ = ["MemoryStore"]

_INDEX = "v:"
_ENTRY = "e:"


class MemoryStore:
    """An LRU of cache records. Satisfies :class:`~gatekeeper.gateway.cache.store.Store`."""

    def __init__(
        self,
        *,
        clock: Clock,
        max_entry_bytes: int = 2**20,
        max_total_bytes: int = 64 * 2**20,
        max_entries: int = 10_000,
    ) -> None:
        if max_entry_bytes <= 0 or max_total_bytes <= 0 or max_entries <= 0:
            raise ConfigurationError("memory cache store: every bound must be positive")
        self._clock = clock
        self.max_entry_bytes = max_entry_bytes
        self.max_total_bytes = max_total_bytes
        self.max_entries = max_entries
        # key -> (expires at on the monotonic clock, size in bytes, record)
        self._records: OrderedDict[str, tuple[float, int, object]] = OrderedDict()
        self._bytes = 0
        self.evictions = 0

    @property
    def total_bytes(self) -> int:
        """Bytes currently accounted to stored records."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._records)

    @property
    def responses(self) -> int:
        """Stored responses (one per URI and variant; the records also hold Vary indexes)."""
        return sum(1 for key in self._records if key.startswith(_ENTRY))

    def _lookup(self, key: str) -> object | None:
        record = self._records.get(key)
        if record is None:
            return None
        if record[0] <= self._clock.monotonic():
            self._remove(key)
            return None
        self._records.move_to_end(key)
        return record[2]

    def _insert(self, key: str, value: object, size: int, ttl: float) -> None:
        self._remove(key)
        self._records[key] = (self._clock.monotonic() + ttl, size, value)
        self._bytes += size
        while len(self._records) > self.max_entries or self._bytes > self.max_total_bytes:
            oldest = next(iter(self._records))
            self._remove(oldest)
            self.evictions += 1

    def _remove(self, key: str) -> None:
        record = self._records.pop(key, None)
        if record is not None:
            self._bytes -= record[1]

    async def get(self, key: str, variant: str) -> CacheEntry | None:
        """The entry if present and not expired (and mark it recently used)."""
        return cast("CacheEntry | None", self._lookup(f"{_ENTRY}{key}:{variant}"))

    async def set(self, key: str, variant: str, entry: CacheEntry, ttl: float) -> bool:
        """Store ``entry``; refused when bigger than ``max_entry_bytes``. Evicts LRU records."""
        size = entry.size
        if size > self.max_entry_bytes or size > self.max_total_bytes:
            return False
        self._insert(f"{_ENTRY}{key}:{variant}", entry, size, ttl)
        return True

    async def get_vary(self, key: str) -> tuple[str, ...] | None:
        """The vary index of primary ``key``."""
        return cast("tuple[str, ...] | None", self._lookup(_INDEX + key))

    async def lookup(self, key: str) -> tuple[tuple[str, ...] | None, CacheEntry | None]:
        """The vary index and, without Vary, the entry."""
        names = await self.get_vary(key)
        return names, (await self.get(key, "") if names == () else None)

    def peek(self, key: str) -> tuple[tuple[str, ...] | None, CacheEntry | None]:
        """:meth:`lookup`, synchronously (the store is in process): the express lane's hits."""
        names = cast("tuple[str, ...] | None", self._lookup(_INDEX + key))
        entry = self._lookup(f"{_ENTRY}{key}:") if names == () else None
        return names, cast("CacheEntry | None", entry)

    async def set_vary(self, key: str, names: tuple[str, ...], ttl: float) -> None:
        """Record the vary index of primary ``key``."""
        self._insert(_INDEX + key, names, 64 + sum(len(n) for n in names), ttl)

    async def delete(self, key: str) -> None:
        """Forget primary ``key``."""
        self._remove(_INDEX + key)

    async def aclose(self) -> None:
        """Drop every record."""
        self._records.clear()
        self._bytes = 0
