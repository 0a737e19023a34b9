"""A small in-process tier in front of a shared store: most hits never leave the process.

Replicas sharing Redis each keep what they read or wrote for at most ``near_ttl`` seconds
(default 1 s) in a bounded memory LRU. Freshness is still computed from the entry itself, so a
near copy never makes a response fresher than it is; what the near tier can delay, by at most
``near_ttl``, is seeing another replica's newer entry or invalidation. A Redis round trip per
hit costs ~100 us of this process's CPU; a near hit costs a dict lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatekeeper.gateway.cache.memory import MemoryStore

if TYPE_CHECKING:
    from gatekeeper.gateway.cache.entry import CacheEntry
    from gatekeeper.gateway.cache.store import Store

__all__ = ["TieredStore"]


class TieredStore:
    """``near`` (memory, short TTLs) over ``far`` (shared). Satisfies ``Store``."""

    def __init__(self, near: MemoryStore, far: Store, *, near_ttl: float = 1.0) -> None:
        self.near = near
        self.far = far
        self.near_ttl = near_ttl

    def __len__(self) -> int:
        return len(self.near)

    async def get(self, key: str, variant: str) -> CacheEntry | None:
        """From the near tier, else from the shared store (and keep a near copy)."""
        entry = await self.near.get(key, variant)
        if entry is None:
            entry = await self.far.get(key, variant)
            if entry is not None:
                await self.near.set(key, variant, entry, self.near_ttl)
        return entry

    async def set(self, key: str, variant: str, entry: CacheEntry, ttl: float) -> bool:
        """Write through: the shared store first, then the near copy."""
        stored = await self.far.set(key, variant, entry, ttl)
        if stored:
            await self.near.set(key, variant, entry, min(ttl, self.near_ttl))
        return stored

    async def get_vary(self, key: str) -> tuple[str, ...] | None:
        """The vary index, near first."""
        names = await self.near.get_vary(key)
        if names is None:
            names = await self.far.get_vary(key)
            if names is not None:
                await self.near.set_vary(key, names, self.near_ttl)
        return names

    async def lookup(self, key: str) -> tuple[tuple[str, ...] | None, CacheEntry | None]:
        """Index and no-Vary entry: near when both are there, else one shared-store trip."""
        names, entry = await self.near.lookup(key)
        if names is not None and (names or entry is not None):
            return names, entry
        names, entry = await self.far.lookup(key)
        if names is not None:
            await self.near.set_vary(key, names, self.near_ttl)
            if entry is not None:
                await self.near.set(key, "", entry, self.near_ttl)
        return names, entry

    def peek(self, key: str) -> tuple[tuple[str, ...] | None, CacheEntry | None]:
        """The near tier's index and no-Vary entry, synchronously (no shared-store trip)."""
        return self.near.peek(key)

    async def set_vary(self, key: str, names: tuple[str, ...], ttl: float) -> None:
        """Write the index through both tiers."""
        await self.far.set_vary(key, names, ttl)
        await self.near.set_vary(key, names, min(ttl, self.near_ttl))

    async def delete(self, key: str) -> None:
        """Forget the key in both tiers (other replicas' near copies expire within near_ttl)."""
        await self.near.delete(key)
        await self.far.delete(key)

    async def aclose(self) -> None:
        """Close both tiers."""
        await self.near.aclose()
        await self.far.aclose()
