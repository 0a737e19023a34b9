"""Where live per-second statistics are shared: Redis for a cluster, a dict when embedded.

Every replica *adds* its increments to the same per-second records, so reading one record gives
the cluster's numbers for that second. Gauges (which are states, not counts) are written per
replica with a short lifetime and merged on read: a replica that dies stops counting within
seconds.

Redis layout, under a prefix ``<p>`` (default ``{gatekeeper:live}``: the configured prefix in
braces, one Redis Cluster hash tag for all the keys):

=========================== ======= ===========================================================
key                         type    content
=========================== ======= ===========================================================
``<p>:s:<second>``          hash    field -> count (see ``events`` for field names), TTL 2 min
``<p>:s:<second>:k``        zset    limited key -> count in that second
``<p>:s:<second>:i``        zset    limited client IP -> count in that second
``<p>:lines``               list    the latest access lines (JSON), newest first, capped
``<p>:replicas``            zset    replica id -> last heartbeat (epoch seconds)
``<p>:g:<replica>``         hash    gauge -> value for one replica, TTL 10 s
=========================== ======= ===========================================================
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from gatekeeper.errors import StorageError

__all__ = ["Bucket", "LiveStore", "MemoryLiveStore", "RedisLiveStore", "merge_gauges"]

_REPLICA_TTL = 5.0  # a replica silent this long no longer counts
_GAUGE_TTL = 10
_MAX_LINES = 100
_TOP_READ = 50


@dataclass(slots=True)
class Bucket:
    """One second of statistics: counters and the limited keys/IPs seen in it."""

    counts: Counter[str]
    limited_keys: Counter[str]
    limited_ips: Counter[str]

    def merge(self, other: Bucket) -> None:
        """Add ``other``'s counts to this bucket."""
        self.counts.update(other.counts)
        self.limited_keys.update(other.limited_keys)
        self.limited_ips.update(other.limited_ips)

    def trim(self, top: int) -> None:
        """Keep only the ``top`` most limited keys and IPs."""
        if len(self.limited_keys) > top:
            self.limited_keys = Counter(dict(self.limited_keys.most_common(top)))
        if len(self.limited_ips) > top:
            self.limited_ips = Counter(dict(self.limited_ips.most_common(top)))


def merge_gauges(
    per_replica: Iterable[dict[str, float]], summed_prefixes: Sequence[str]
) -> dict[str, float]:
    """Merge gauges of several replicas: summed for per-replica quantities, max otherwise."""
    out: dict[str, float] = {}
    prefixes = tuple(summed_prefixes)
    for gauges in per_replica:
        for key, value in gauges.items():
            if key in out:
                out[key] = out[key] + value if key.startswith(prefixes) else max(out[key], value)
            else:
                out[key] = value
    return out


class LiveStore(Protocol):
    """The shared place of live statistics."""

    async def add(self, pending: dict[int, Bucket], lines: list[dict[str, Any]], ttl: int) -> None:
        """Add per-second increments and append access lines."""
        ...

    async def heartbeat(self, replica: str, now: float, gauges: dict[str, float] | None) -> None:
        """Say the replica is alive; replace its gauges when given."""
        ...

    async def read(self, seconds: Sequence[int]) -> dict[int, Bucket]:
        """The merged buckets of the given seconds (missing seconds are absent)."""
        ...

    async def replicas(
        self, now: float, summed_prefixes: Sequence[str]
    ) -> tuple[int, dict[str, float]]:
        """How many replicas are alive, and their gauges merged."""
        ...

    async def lines(self, limit: int) -> list[dict[str, Any]]:
        """The latest access lines, newest first."""
        ...


class MemoryLiveStore:
    """The embedded store: this process's numbers only."""

    def __init__(self) -> None:
        self._seconds: dict[int, Bucket] = {}
        self._lines: list[dict[str, Any]] = []
        self._replicas: dict[str, tuple[float, dict[str, float]]] = {}

    async def add(self, pending: dict[int, Bucket], lines: list[dict[str, Any]], ttl: int) -> None:
        for second, bucket in pending.items():
            if second in self._seconds:
                self._seconds[second].merge(bucket)
            else:
                self._seconds[second] = bucket
        if pending:
            horizon = max(pending) - ttl
            for old in [s for s in self._seconds if s < horizon]:
                del self._seconds[old]
        self._lines = (list(reversed(lines)) + self._lines)[:_MAX_LINES]

    async def heartbeat(self, replica: str, now: float, gauges: dict[str, float] | None) -> None:
        previous = self._replicas.get(replica, (now, {}))[1]
        self._replicas[replica] = (now, dict(gauges) if gauges is not None else previous)

    async def read(self, seconds: Sequence[int]) -> dict[int, Bucket]:
        return {s: self._seconds[s] for s in seconds if s in self._seconds}

    async def replicas(
        self, now: float, summed_prefixes: Sequence[str]
    ) -> tuple[int, dict[str, float]]:
        alive = [g for seen, g in self._replicas.values() if now - seen <= _REPLICA_TTL]
        return len(alive), merge_gauges(alive, summed_prefixes)

    async def lines(self, limit: int) -> list[dict[str, Any]]:
        return self._lines[:limit]


class RedisLiveStore:
    """Live statistics shared by every replica through Redis (see the module docstring)."""

    def __init__(self, redis: Any, prefix: str = "gatekeeper:live") -> None:
        self.redis = redis
        # Every key under one hash tag: a flush or a read is one pipeline to one node of a
        # Redis Cluster (one round trip), and the stats of one second never straddle nodes.
        self.prefix = prefix if "{" in prefix else f"{{{prefix}}}"

    def _second(self, second: int) -> str:
        return f"{self.prefix}:s:{second}"

    async def add(self, pending: dict[int, Bucket], lines: list[dict[str, Any]], ttl: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for second, bucket in pending.items():
            key = self._second(second)
            for field, n in bucket.counts.items():
                if n:
                    pipe.hincrby(key, field, n)
            pipe.expire(key, ttl)
            for suffix, counter in (("k", bucket.limited_keys), ("i", bucket.limited_ips)):
                if counter:
                    for member, n in counter.items():
                        pipe.zincrby(f"{key}:{suffix}", n, member)
                    pipe.expire(f"{key}:{suffix}", ttl)
        if lines:
            key = f"{self.prefix}:lines"
            pipe.lpush(key, *(json.dumps(line, separators=(",", ":")) for line in lines))
            pipe.ltrim(key, 0, _MAX_LINES - 1)
            pipe.expire(key, ttl)
        await self._run(pipe)

    async def heartbeat(self, replica: str, now: float, gauges: dict[str, float] | None) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(f"{self.prefix}:replicas", {replica: now})
        gkey = f"{self.prefix}:g:{replica}"
        if gauges is not None:
            pipe.delete(gkey)
            if gauges:
                pipe.hset(gkey, mapping={k: repr(float(v)) for k, v in gauges.items()})
        pipe.expire(gkey, _GAUGE_TTL)
        await self._run(pipe)

    async def read(self, seconds: Sequence[int]) -> dict[int, Bucket]:
        pipe = self.redis.pipeline(transaction=False)
        for second in seconds:
            key = self._second(second)
            pipe.hgetall(key)
            pipe.zrevrange(f"{key}:k", 0, _TOP_READ - 1, withscores=True)
            pipe.zrevrange(f"{key}:i", 0, _TOP_READ - 1, withscores=True)
        replies = await self._run(pipe)
        out: dict[int, Bucket] = {}
        for i, second in enumerate(seconds):
            counts, keys, ips = replies[3 * i : 3 * i + 3]
            if not counts and not keys and not ips:
                continue
            out[second] = Bucket(
                Counter({_text(k): int(v) for k, v in counts.items()}),
                Counter({_text(m): int(s) for m, s in keys}),
                Counter({_text(m): int(s) for m, s in ips}),
            )
        return out

    async def replicas(
        self, now: float, summed_prefixes: Sequence[str]
    ) -> tuple[int, dict[str, float]]:
        key = f"{self.prefix}:replicas"
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", now - _REPLICA_TTL)
        pipe.zrange(key, 0, -1)
        _, names = await self._run(pipe)
        if not names:
            return 0, {}
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(f"{self.prefix}:g:{_text(name)}")
        replies = await self._run(pipe)
        per_replica = [{_text(k): float(v) for k, v in reply.items()} for reply in replies]
        return len(names), merge_gauges(per_replica, summed_prefixes)

    async def lines(self, limit: int) -> list[dict[str, Any]]:
        try:
            raw = await self.redis.lrange(f"{self.prefix}:lines", 0, limit - 1)
        except RedisError as exc:
            raise StorageError(f"live statistics: {exc}") from exc
        return [json.loads(item) for item in raw]

    async def _run(self, pipe: Any) -> list[Any]:
        try:
            result: list[Any] = await pipe.execute()
        except RedisError as exc:
            raise StorageError(f"live statistics: {exc}") from exc
        return result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
