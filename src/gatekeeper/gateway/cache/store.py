"""The shape of a cache store, and how stores are chosen by URL.

A store keeps two kinds of records: entries (:class:`CacheEntry`) under a primary key (the URI)
and a secondary key (the variant, ``""`` without ``Vary``), and, per primary key, the *vary
index*: the field names the URI's responses vary on. A lookup reads the index, computes the
secondary key from the request, then reads the entry. Both records expire
after the TTL given when written. Stores raise :class:`~gatekeeper.errors.StorageError` when
they fail; the cache then behaves as on a miss (fail open), it never fails a request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gatekeeper.errors import ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gatekeeper.gateway.cache.entry import CacheEntry
    from gatekeeper.types import Clock

__all__ = ["Store", "store_from_url"]


@runtime_checkable
class Store(Protocol):
    """Where cached responses live."""

    async def get(self, key: str, variant: str) -> CacheEntry | None:
        """The entry of primary ``key`` and ``variant``, or ``None`` (absent, expired, corrupt)."""
        ...

    async def set(self, key: str, variant: str, entry: CacheEntry, ttl: float) -> bool:
        """Store ``entry`` for ``ttl`` seconds; ``False`` when it is refused (too large)."""
        ...

    async def get_vary(self, key: str) -> tuple[str, ...] | None:
        """The vary index of primary ``key``: ``()`` for no Vary, ``None`` for nothing stored."""
        ...

    async def lookup(self, key: str) -> tuple[tuple[str, ...] | None, CacheEntry | None]:
        """The vary index and, when it is ``()`` (no Vary), the entry: one round trip."""
        ...

    async def set_vary(self, key: str, names: tuple[str, ...], ttl: float) -> None:
        """Record the field names responses of primary ``key`` vary on."""
        ...

    async def delete(self, key: str) -> None:
        """Forget primary ``key`` (its index; orphaned variants then expire on their own)."""
        ...

    async def aclose(self) -> None:
        """Release connections (a store built from a shared client leaves it open)."""
        ...


def store_from_url(
    url: str,
    *,
    clock: Clock,
    max_entry_bytes: int,
    max_total_bytes: int = 64 * 2**20,
    max_entries: int = 10_000,
    prefix: str = "gk:cache",
    redis: Redis | None = None,
) -> Store:
    """A store chosen by scheme: ``memory://`` (the default) or a Redis URL (``redis://``,
    ``rediss://``, ``redis+cluster://``, ...: see :mod:`gatekeeper.redis_client`).

    With ``redis`` given, that shared client is used and ``url`` only selects the kind.
    """
    from gatekeeper.gateway.cache.memory import MemoryStore
    from gatekeeper.gateway.cache.redis import RedisStore

    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in {"", "memory"}:
        return MemoryStore(
            clock=clock,
            max_entry_bytes=max_entry_bytes,
            max_total_bytes=max_total_bytes,
            max_entries=max_entries,
        )
    if scheme in {"redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel"}:
        if redis is not None:
            return RedisStore(redis, prefix=prefix, max_entry_bytes=max_entry_bytes)
        return RedisStore.from_url(url, prefix=prefix, max_entry_bytes=max_entry_bytes)
    raise ConfigurationError(f"cache store URL {url!r}: unknown scheme (use memory:// or redis://)")
