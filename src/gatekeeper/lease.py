"""Leases: one holder at a time of a named job across every replica sharing one Redis.

A lease is a Redis key holding its owner's name with a TTL, taken when free and renewed only by
its holder (``lua/lease.lua``), released only by its holder (``lua/release.lua``). A holder that
dies stops renewing; the key expires after the TTL and the next replica to ask takes it. The
waiting room's admission worker and the events' delivery leader both lead this way (the scripts
are this module's; the waiting room calls them through its own script runner).
"""

from __future__ import annotations

import math
from importlib import resources
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gatekeeper.errors import StorageError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisLease", "lease_script"]


def lease_script(name: str) -> str:
    """The Lua source of ``"lease"`` (take or renew) or ``"release"``."""
    return (resources.files("gatekeeper") / "lua" / f"{name}.lua").read_text()


class RedisLease:
    """The lease ``key`` on ``redis``, taken and renewed by :meth:`acquire`."""

    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key
        self._take = redis.register_script(lease_script("lease"))
        self._release = redis.register_script(lease_script("release"))

    async def acquire(self, owner: str, ttl: float) -> bool:
        """Take the lease or renew it for ``ttl`` seconds; whether ``owner`` holds it now."""
        try:
            held = await self._take(keys=[self.key], args=[owner, max(1, math.ceil(ttl * 1000))])
        except (RedisError, OSError) as exc:
            raise StorageError(f"lease {self.key}: {exc}") from exc
        return bool(held)

    async def release(self, owner: str) -> None:
        """Give the lease up now (only if ``owner`` holds it) instead of letting it expire."""
        try:
            await self._release(keys=[self.key], args=[owner])
        except (RedisError, OSError) as exc:
            raise StorageError(f"lease {self.key}: {exc}") from exc
