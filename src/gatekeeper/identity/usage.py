"""Usage per API key (requests and denials per hour and per day) and the recent request log.

With Redis every replica adds to the same counters (``HINCRBY`` on one hash per key and hour or
day, expiring after the history it serves); without Redis they live in this process. Time
buckets follow the injected clock, in UTC.
"""

from __future__ import annotations

import json
import math
from collections import deque
from typing import TYPE_CHECKING, Any

import structlog

from gatekeeper.errors import InvalidInput, StorageError
from gatekeeper.redis_client import translate_redis_errors
from gatekeeper.types import Clock

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RequestLog", "UsageCounters"]

_log = structlog.get_logger("gatekeeper.identity.usage")
_SPAN = {"hour": 3600, "day": 86400}
_KEEP = {"hour": 8 * 86400, "day": 400 * 86400}


class UsageCounters:
    """Counts requests and denials per subject (``key:<id>``) per hour and day."""

    def __init__(self, redis: Redis | None, clock: Clock, *, prefix: str = "gk") -> None:
        self.redis = redis
        self.clock = clock
        self.prefix = prefix
        self._local: dict[tuple[str, str, int], dict[str, int]] = {}

    def _key(self, subject: str, granularity: str, bucket: int) -> str:
        return f"{self.prefix}:usage:{{{subject}}}:{granularity}:{bucket}"

    async def record(self, subject: str, *, allowed: bool, cost: int = 1) -> None:
        now = self.clock.now()
        field = "requests" if allowed else "denied"
        if self.redis is not None:
            try:
                with translate_redis_errors("counting usage"):
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for granularity, span in _SPAN.items():
                            key = self._key(subject, granularity, int(now // span))
                            pipe.hincrby(key, field, cost)
                            pipe.expire(key, _KEEP[granularity])
                        await pipe.execute()
            except StorageError as exc:  # bookkeeping: never fails the request it counts
                _log.warning("usage_not_counted", error=str(exc))
            return
        for granularity, span in _SPAN.items():
            counts = self._local.setdefault((subject, granularity, int(now // span)), {})
            counts[field] = counts.get(field, 0) + cost

    async def history(self, subject: str, granularity: str, count: int) -> list[dict[str, Any]]:
        """The last ``count`` buckets, oldest first: ``{"start", "requests", "denied"}``."""
        if granularity not in _SPAN:
            raise InvalidInput(f"granularity must be 'hour' or 'day'; got {granularity!r}")
        if not 1 <= count <= 400:
            raise InvalidInput("count must be between 1 and 400")
        span = _SPAN[granularity]
        last = int(self.clock.now() // span)
        buckets = list(range(last - count + 1, last + 1))
        if self.redis is not None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for bucket in buckets:
                    pipe.hgetall(self._key(subject, granularity, bucket))
                raw = await pipe.execute()
            rows = [{_text(k): int(v) for k, v in r.items()} for r in raw]
        else:
            rows = [self._local.get((subject, granularity, b), {}) for b in buckets]
        return [
            {
                "start": bucket * span,
                "requests": row.get("requests", 0),
                "denied": row.get("denied", 0),
            }
            for bucket, row in zip(buckets, rows, strict=True)
        ]

    async def totals(self, subject: str) -> dict[str, int]:
        """This hour's and today's counts."""
        hour = (await self.history(subject, "hour", 1))[0]
        day = (await self.history(subject, "day", 1))[0]
        return {
            "requests_this_hour": hour["requests"],
            "denied_this_hour": hour["denied"],
            "requests_today": day["requests"],
            "denied_today": day["denied"],
        }


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RequestLog:
    """The most recent requests (bounded), shared through Redis when there is one."""

    def __init__(
        self, redis: Redis | None, clock: Clock, *, prefix: str = "gk", size: int = 1000
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.key = f"{prefix}:requestlog"
        self.size = size
        self._local: deque[str] = deque(maxlen=size)

    async def append(self, **entry: Any) -> None:
        line = json.dumps({"at": math.floor(self.clock.now() * 1000) / 1000, **entry})
        if self.redis is not None:
            try:
                with translate_redis_errors("logging a request"):
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.lpush(self.key, line)
                        pipe.ltrim(self.key, 0, self.size - 1)
                        await pipe.execute()
            except StorageError as exc:  # bookkeeping: never fails the request it logs
                _log.warning("request_not_logged", error=str(exc))
        else:
            self._local.appendleft(line)

    async def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        limit = max(1, min(limit, self.size))
        if self.redis is not None:
            lines = [_text(x) for x in await self.redis.lrange(self.key, 0, limit - 1)]
        else:
            lines = list(self._local)[:limit]
        return [json.loads(line) for line in lines]
