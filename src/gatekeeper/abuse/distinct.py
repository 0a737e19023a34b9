"""Distinct counters: "how many different paths / keys / networks in the last ``window``".

With Redis, one sorted set per (pattern, subject), ``gk:{abuse:<subject>}:<pattern>`` (the hash
tag keeps it on one Cluster slot), members scored by the time last seen. One script per
observation adds the member, drops what left the window and answers the count; it keeps at most
``threshold`` members (the newest), so a subject costs bounded memory however it behaves. A
batch of observations is one pipelined round trip (on a Cluster client: concurrent calls, each
to its node). Without Redis, the same in process.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gatekeeper.abuse.patterns import Rule
from gatekeeper.abuse.timing import LUA_NOW, script_now
from gatekeeper.types import Clock

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["DistinctCounters"]

# KEYS[1] the set; ARGV: now (empty: Redis TIME), window, member, threshold; answers the count.
_OBSERVE = (
    LUA_NOW
    + """
local window = tonumber(ARGV[2])
local keep = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
if n > keep then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - keep - 1) end
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return n
"""
)
_MEMORY_SUBJECTS = 100_000  # beyond: the least recently seen subject is forgotten


def storage_key(prefix: str, pattern: str, subject: str) -> str:
    tag = "{abuse:" + subject.replace("{", "(").replace("}", ")") + "}"
    return f"{prefix}:{tag}:{pattern}"


class DistinctCounters:
    """Counts distinct members per (rule, subject), in Redis when given one."""

    def __init__(self, redis: Redis | None, clock: Clock, *, prefix: str = "gk") -> None:
        self.redis = redis
        self.clock = clock
        self.prefix = prefix
        self._script: Any = redis.register_script(_OBSERVE) if redis is not None else None
        self._cluster = hasattr(redis, "get_nodes")  # a redis.asyncio.cluster.RedisCluster
        self._sets: OrderedDict[str, dict[str, float]] = OrderedDict()

    async def count(self, hits: Sequence[tuple[Rule, str, str]]) -> list[int]:
        """Observe each ``(rule, subject, member)``; the distinct count of each subject now
        (counted up to one past the threshold)."""
        if not hits:
            return []
        now = self.clock.now()
        if self.redis is None:
            return [self._count_here(rule, subject, member, now) for rule, subject, member in hits]
        at = script_now(self.clock)
        calls = [
            ([storage_key(self.prefix, rule.pattern, subject)], [at, repr(rule.window), member,
                                                                  rule.threshold])
            for rule, subject, member in hits
        ]  # fmt: skip
        if self._cluster:
            # (A Cluster pipeline refuses scripts: one call per key, each sent to its node,
            # all at once, once the client knows the nodes: a no-op after the first time.)
            await self.redis.initialize()
            answers = await asyncio.gather(*(self._script(keys=k, args=a) for k, a in calls))
            return [int(n) for n in answers]
        # (As a context, the pipeline gives its connection back even when the batch is given up.)
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await self._script(keys=keys, args=args, client=pipe)
            return [int(n) for n in await pipe.execute()]

    def _count_here(self, rule: Rule, subject: str, member: str, now: float) -> int:
        key = storage_key(self.prefix, rule.pattern, subject)
        members = self._sets.get(key)
        if members is None:
            members = self._sets[key] = {}
            if len(self._sets) > _MEMORY_SUBJECTS:
                self._sets.popitem(last=False)
        else:
            self._sets.move_to_end(key)
        cut = now - rule.window
        for old in [m for m, seen in members.items() if seen <= cut]:
            del members[old]
        members.pop(member, None)
        members[member] = now  # (insertion order is age order: the oldest first)
        n = len(members)
        while len(members) > rule.threshold:
            del members[next(iter(members))]
        return n
