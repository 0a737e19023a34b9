"""The flagged clients: bounded, each listed until ``ttl`` seconds after its last finding.

With Redis every replica shares one list: a hash of entries and a sorted set of their expiry
times under one hash tag (``gk:{abuse:flags}:*``), changed atomically by one script, which also
answers whether the entry is new, so exactly one replica reports a new finding (its event, its
ban). Past ``max_entries`` the entries closest to expiry are dropped. Without Redis, the same in
process.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gatekeeper.abuse.patterns import Finding
from gatekeeper.types import Clock

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["FlaggedList"]

# KEYS[1] entries (hash), KEYS[2] expiries (zset); ARGV: now, ttl, field, entry, max_entries.
# Returns 1 when the field was not flagged, else 0.
_FLAG = """
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, f in ipairs(expired) do redis.call('HDEL', KEYS[1], f) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local entry = cjson.decode(ARGV[4])
local old = redis.call('HGET', KEYS[1], ARGV[3])
local new = 1
if old then
  new = 0
  local previous = cjson.decode(old)
  entry['first_seen'] = previous['first_seen']
  entry['banned_for'] = previous['banned_for']
end
redis.call('HSET', KEYS[1], ARGV[3], cjson.encode(entry))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if extra > 0 then
  local dropped = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
  for _, f in ipairs(dropped) do redis.call('HDEL', KEYS[1], f) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(ARGV[2]) * 1000))
return new
"""


def _field(pattern: str, subject: str) -> str:
    return f"{pattern}|{subject}"


class FlaggedList:
    """``add`` a finding (True: newly flagged), ``entries``, ``clear`` one, ``note_ban``."""

    def __init__(
        self,
        redis: Redis | None,
        clock: Clock,
        *,
        ttl: float = 3600.0,
        max_entries: int = 1000,
        prefix: str = "gk",
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.ttl = ttl
        self.max_entries = max_entries
        self._hash = f"{prefix}:{{abuse:flags}}:entries"
        self._expiry = f"{prefix}:{{abuse:flags}}:expiry"
        self._script: Any = redis.register_script(_FLAG) if redis is not None else None
        self._here: dict[str, dict[str, Any]] = {}

    async def add(self, finding: Finding) -> bool:
        """List ``finding`` (or refresh its entry); whether it was not listed before."""
        now = self.clock.now()
        field = _field(finding.pattern, finding.subject)
        entry = {
            "pattern": finding.pattern,
            "subject": finding.subject,
            "type": finding.kind,
            "count": finding.count,
            "threshold": finding.threshold,
            "window": finding.window,
            "first_seen": now,
            "last_seen": now,
            "expires_at": now + self.ttl,
            "banned_for": 0,
        }
        if self.redis is not None:
            args = [repr(now), repr(self.ttl), field, json.dumps(entry), self.max_entries]
            return bool(await self._script(keys=[self._hash, self._expiry], args=args))
        self._expire_here(now)
        old = self._here.pop(field, None)
        if old is not None:
            entry["first_seen"] = old["first_seen"]
            entry["banned_for"] = old["banned_for"]
        self._here[field] = entry
        while len(self._here) > self.max_entries:
            oldest = min(self._here, key=lambda f: self._here[f]["expires_at"])
            del self._here[oldest]
        return old is None

    async def note_ban(self, finding: Finding, seconds: float) -> None:
        """Record on the entry that its subject was banned for ``seconds``."""
        field = _field(finding.pattern, finding.subject)
        if self.redis is None:
            if field in self._here:
                self._here[field]["banned_for"] = seconds
            return
        raw = await self.redis.hget(self._hash, field)
        if raw is not None:
            entry = json.loads(raw)
            entry["banned_for"] = seconds
            await self.redis.hset(self._hash, field, json.dumps(entry))

    async def entries(self) -> list[dict[str, Any]]:
        """Every listed entry, the most recent first."""
        now = self.clock.now()
        if self.redis is None:
            self._expire_here(now)
            found = list(self._here.values())
        else:
            raw = await self.redis.hgetall(self._hash)
            found = [json.loads(v) for v in raw.values()]
            found = [e for e in found if e["expires_at"] > now]
        return sorted(found, key=lambda e: (-e["last_seen"], e["pattern"], e["subject"]))

    async def clear(self, pattern: str, subject: str) -> bool:
        """Remove one entry; whether it was listed."""
        field = _field(pattern, subject)
        if self.redis is None:
            return self._here.pop(field, None) is not None
        removed = await self.redis.hdel(self._hash, field)
        await self.redis.zrem(self._expiry, field)
        return bool(removed)

    def _expire_here(self, now: float) -> None:
        for field in [f for f, e in self._here.items() if e["expires_at"] <= now]:
            del self._here[field]
