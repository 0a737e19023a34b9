"""The flagged clients: bounded, each listed until ``ttl`` seconds after its last finding.

With Redis every replica shares one list: a hash of entries and a sorted set of their expiry
times under one hash tag (``gk:{abuse:flags}:*``), changed atomically by one script, which also
answers whether the entry is new, so exactly one replica reports a new finding (its event, its
ban), and whether a listed subject's ban has run out while it keeps going (one replica bans it
again). Past ``max_entries`` the entries closest to expiry are dropped. Without Redis, the same
in process.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gatekeeper.abuse.patterns import Finding
from gatekeeper.types import Clock

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["BAN_DUE", "LISTED", "NEW", "FlaggedList"]

# What ``FlaggedList.add`` answers.
LISTED = 0  # listed already (refreshed), nothing to do
NEW = 1  # newly listed: report it (and ban, when the rule bans)
BAN_DUE = 2  # listed already, but its ban has run out: ban again (the rule bans)

# A ban being imposed is claimed on the entry for this long (so that one replica imposes it);
# ``note_ban`` then records the real end.
_BAN_CLAIM = 60.0

# KEYS[1] entries (hash), KEYS[2] expiries (zset); ARGV: now, ttl, field, entry, max_entries,
# "1" when the rule bans, the ban claim. Answers LISTED, NEW or BAN_DUE.
_FLAG = """
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, f in ipairs(expired) do redis.call('HDEL', KEYS[1], f) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local entry = cjson.decode(ARGV[4])
local old = redis.call('HGET', KEYS[1], ARGV[3])
local result = 1
if old then
  local previous = cjson.decode(old)
  entry['first_seen'] = previous['first_seen']
  entry['banned_for'] = previous['banned_for']
  entry['banned_until'] = previous['banned_until']
  result = 0
  if ARGV[6] == '1' and tonumber(previous['banned_until'] or 0) <= now then result = 2 end
end
if result > 0 and ARGV[6] == '1' then entry['banned_until'] = now + tonumber(ARGV[7]) end
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
return result
"""

# KEYS[1] entries; ARGV: field, banned_for, banned_until.
_NOTE_BAN = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local entry = cjson.decode(raw)
entry['banned_for'] = tonumber(ARGV[2])
entry['banned_until'] = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
return 1
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
        self._note: Any = redis.register_script(_NOTE_BAN) if redis is not None else None
        self._here: dict[str, dict[str, Any]] = {}

    async def add(self, finding: Finding, *, bans: bool = False) -> int:
        """List ``finding`` (or refresh its entry): :data:`NEW`, :data:`LISTED`, or (``bans``:
        the rule bans) :data:`BAN_DUE` when the listed subject's last ban has run out."""
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
            "banned_until": 0,
        }
        if self.redis is not None:
            args = [repr(now), repr(self.ttl), field, json.dumps(entry), self.max_entries,
                    "1" if bans else "0", repr(_BAN_CLAIM)]  # fmt: skip
            return int(await self._script(keys=[self._hash, self._expiry], args=args))
        self._expire_here(now)
        old = self._here.pop(field, None)
        result = NEW
        if old is not None:
            for name in ("first_seen", "banned_for", "banned_until"):
                entry[name] = old[name]
            result = BAN_DUE if bans and old["banned_until"] <= now else LISTED
        if result != LISTED and bans:
            entry["banned_until"] = now + _BAN_CLAIM
        self._here[field] = entry
        while len(self._here) > self.max_entries:
            oldest = min(self._here, key=lambda f: self._here[f]["expires_at"])
            del self._here[oldest]
        return result

    async def note_ban(self, finding: Finding, seconds: float) -> None:
        """Record on the entry that its subject was banned for ``seconds`` from now."""
        field = _field(finding.pattern, finding.subject)
        until = self.clock.now() + seconds
        if self.redis is None:
            if field in self._here:
                self._here[field].update(banned_for=seconds, banned_until=until)
            return
        await self._note(keys=[self._hash], args=[field, repr(seconds), repr(until)])

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
