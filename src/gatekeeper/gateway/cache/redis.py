"""The Redis store: one cache shared by every replica.

Records are plain strings written with ``SET ... PX`` so that Redis expires them itself; a
replica that stored a response and another that reads it need nothing else in common. Keys
carry the primary key as a hash tag (``{prefix}:{<primary>}:e:<variant>``) so that a URI's index
and variants live on one Redis Cluster shard. Entries larger than ``max_entry_bytes`` are not
written: Redis is memory too, and one huge body must not evict thousands of small ones.

Every Redis failure becomes :class:`~gatekeeper.errors.StorageError`; the cache treats it as a
miss, so a Redis outage costs hit ratio, never availability.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gatekeeper.errors import ConfigurationError, StorageError, StorageTimeout
from gatekeeper.gateway.cache.entry import CacheEntry
from gatekeeper.redis_client import redis_from_url

__all__ = ["RedisStore"]

T = TypeVar("T")


@asynccontextmanager
async def _translated(action: str) -> AsyncIterator[None]:
    """Map redis-py's exceptions to Gatekeeper's at this edge."""
    try:
        yield
    except RedisTimeoutError as exc:
        raise StorageTimeout(f"cache store: {action} timed out") from exc
    except (RedisError, OSError) as exc:
        raise StorageError(f"cache store: {action} failed: {exc}") from exc


async def _call(action: str, awaitable: Awaitable[T]) -> T:
    async with _translated(action):
        return await awaitable
    raise AssertionError("unreachable")  # pragma: no cover - for mypy's flow analysis


class RedisStore:
    """Cache records in Redis. Satisfies :class:`~gatekeeper.gateway.cache.store.Store`."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "gk:cache",
        max_entry_bytes: int = 2**20,
        owns_client: bool = False,
    ) -> None:
        if max_entry_bytes <= 0:
            raise ConfigurationError("redis cache store: max_entry_bytes must be positive")
        pool = getattr(client, "connection_pool", None)  # a cluster client has none
        if pool is not None and pool.connection_kwargs.get("decode_responses"):
            # Bodies are bytes: a shared client that decodes replies cannot carry them, so use
            # a pool of our own with the same connection settings.
            kwargs = dict(pool.connection_kwargs, decode_responses=False)
            own = aioredis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            client = aioredis.Redis.from_pool(own)  # owns the pool: aclose() closes it
            owns_client = True
        self._redis = client
        self.prefix = prefix
        self.max_entry_bytes = max_entry_bytes
        self._owns_client = owns_client

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "gk:cache", max_entry_bytes: int = 2**20
    ) -> RedisStore:
        """A store with a client of its own (closed by :meth:`aclose`); a cluster URL
        (``redis+cluster://``) gives a cluster client."""
        try:
            client = redis_from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        except ConfigurationError as exc:
            raise ConfigurationError(f"cache store URL {url!r}: {exc}") from exc
        return cls(client, prefix=prefix, max_entry_bytes=max_entry_bytes, owns_client=True)

    def _entry_key(self, key: str, variant: str) -> str:
        return f"{self.prefix}:{{{key}}}:e:{variant}"

    def _index_key(self, key: str) -> str:
        return f"{self.prefix}:{{{key}}}:v"

    async def get(self, key: str, variant: str) -> CacheEntry | None:
        """The entry, or ``None``; a record that does not decode counts as absent."""
        data = await _call("GET", self._redis.get(self._entry_key(key, variant)))
        if not isinstance(data, bytes):
            return None
        try:
            return CacheEntry.from_bytes(data)
        except ValueError:
            return None

    async def set(self, key: str, variant: str, entry: CacheEntry, ttl: float) -> bool:
        """Write the entry with a TTL; refused (``False``) past ``max_entry_bytes``."""
        data = entry.to_bytes()
        if len(data) > self.max_entry_bytes:
            return False
        milliseconds = max(1, int(ttl * 1000))
        await _call("SET", self._redis.set(self._entry_key(key, variant), data, px=milliseconds))
        return True

    async def get_vary(self, key: str) -> tuple[str, ...] | None:
        """The vary index of primary ``key``."""
        return _decode_index(await _call("GET", self._redis.get(self._index_key(key))))

    async def lookup(self, key: str) -> tuple[tuple[str, ...] | None, CacheEntry | None]:
        """Index and no-Vary entry in one MGET (same hash tag: one shard in a cluster)."""
        index, data = await _call(
            "MGET", self._redis.mget(self._index_key(key), self._entry_key(key, ""))
        )
        names = _decode_index(index)
        if names != () or not isinstance(data, bytes):
            return names, None
        try:
            return names, CacheEntry.from_bytes(data)
        except ValueError:
            return names, None

    async def set_vary(self, key: str, names: tuple[str, ...], ttl: float) -> None:
        """Write the vary index of primary ``key`` with a TTL."""
        milliseconds = max(1, int(ttl * 1000))
        payload = json.dumps(list(names), separators=(",", ":"))
        await _call("SET", self._redis.set(self._index_key(key), payload, px=milliseconds))

    async def delete(self, key: str) -> None:
        """Forget primary ``key``: its index goes, its variants become unreachable and expire."""
        await _call("UNLINK", self._redis.unlink(self._index_key(key)))

    async def ping(self) -> None:
        """Raise :class:`StorageError` unless Redis answers."""
        await _call("PING", self._redis.ping())

    async def aclose(self) -> None:
        """Close the client if this store created it."""
        if self._owns_client:
            await self._redis.aclose()


def _decode_index(data: object) -> tuple[str, ...] | None:
    """A stored vary index, or ``None`` when absent or unreadable."""
    if not isinstance(data, (bytes, str)):
        return None
    try:
        names = json.loads(data)
    except ValueError:
        return None
    if not isinstance(names, list):
        return None
    return tuple(str(name) for name in names)
