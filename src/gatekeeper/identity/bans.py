"""Progressive bans: a subject (key or IP) that keeps hitting its limit is shut out, for longer
each time, and forgiven after a quiet period.

``threshold`` denials within one ``window`` make an offence. The n-th offence bans for
``base * multiplier**(n-1)`` seconds (the seed: 300 s, doubling), at most ``max_ban``. A subject
with no offence for ``decay`` seconds starts again at the base. All times come from the injected
clock (passed to Redis as an argument), so tests control them; Redis expiries only collect
garbage. With Redis the state is shared by every replica and updated atomically by one script.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gatekeeper.errors import ConfigurationError
from gatekeeper.redis_client import translate_redis_errors
from gatekeeper.types import Clock

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["BanList", "BanRules"]

# KEYS[1] violations counter of the current window, KEYS[2] the subject's ban state.
# ARGV: now, window, threshold, base, multiplier, max_ban, decay
_VIOLATE = """
local now = tonumber(ARGV[1])
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) * 2) end
if n < tonumber(ARGV[3]) then return '0' end
redis.call('DEL', KEYS[1])
local state = redis.call('HMGET', KEYS[2], 'offences', 'last')
local offences = tonumber(state[1] or '0')
local last = tonumber(state[2] or '0')
if now - last > tonumber(ARGV[7]) then offences = 0 end
offences = offences + 1
local duration = math.min(tonumber(ARGV[4]) * tonumber(ARGV[5]) ^ (offences - 1), tonumber(ARGV[6]))
redis.call('HSET', KEYS[2], 'offences', offences, 'last', now, 'until', now + duration)
redis.call('EXPIRE', KEYS[2], math.ceil(duration + tonumber(ARGV[7])) + 60)
return tostring(duration)
"""


@dataclass(frozen=True, slots=True)
class BanRules:
    """When and for how long to ban (defaults from the seeds)."""

    threshold: int = 10
    window: float = 60.0
    base: float = 300.0
    multiplier: float = 2.0
    max_ban: float = 86400.0
    decay: float = 86400.0

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.window <= 0 or self.base <= 0 or self.multiplier < 1:
            raise ConfigurationError(
                "ban rules: threshold >= 1, window > 0, base > 0 and multiplier >= 1"
            )


class BanList:
    """Records limit violations and answers how long a subject remains banned."""

    def __init__(
        self,
        redis: Redis | None,
        clock: Clock,
        rules: BanRules | None = None,
        *,
        prefix: str = "gk",
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.rules = rules or BanRules()
        self.prefix = prefix
        self._violations: dict[str, tuple[int, int]] = {}  # subject -> (window index, count)
        self._state: dict[str, tuple[int, float, float]] = {}  # offences, last, until

    def _keys(self, subject: str, window_index: int) -> list[str]:
        tag = "{ban:" + subject.replace("{", "(").replace("}", ")") + "}"
        return [f"{self.prefix}:{tag}:v:{window_index}", f"{self.prefix}:{tag}:state"]

    async def violation(self, subject: str) -> float:
        """Count one denial of ``subject``; the ban imposed now in seconds, else 0."""
        return await self._count(subject, self.rules.threshold)

    async def offence(self, subject: str) -> float:
        """Record one offence of ``subject`` at once (abuse detection found one): the ban
        imposed now in seconds, progressive like the offences counted from denials."""
        return await self._count(subject, 1)

    async def _count(self, subject: str, threshold: int) -> float:
        rules = self.rules
        now = self.clock.now()
        index = math.floor(now / rules.window)
        if self.redis is not None:
            with translate_redis_errors("recording a violation"):
                result = await self.redis.eval(
                    _VIOLATE,
                    2,
                    *self._keys(subject, index),
                    repr(now),
                    repr(rules.window),
                    threshold,
                    repr(rules.base),
                    repr(rules.multiplier),
                    repr(rules.max_ban),
                    repr(rules.decay),
                )
            return float(result)
        window, count = self._violations.get(subject, (index, 0))
        count = count + 1 if window == index else 1
        if count < threshold:
            self._violations[subject] = (index, count)
            return 0.0
        self._violations.pop(subject, None)
        offences, last, _ = self._state.get(subject, (0, 0.0, 0.0))
        if now - last > rules.decay:
            offences = 0
        offences += 1
        duration = min(rules.base * rules.multiplier ** (offences - 1), rules.max_ban)
        self._state[subject] = (offences, now, now + duration)
        return duration

    async def remaining(self, subject: str) -> float:
        """Seconds ``subject`` stays banned (0: not banned)."""
        if self.redis is not None:
            with translate_redis_errors("reading a ban"):
                until = await self.redis.hget(self._keys(subject, 0)[1], "until")
            end = float(until) if until is not None else 0.0
        else:
            end = self._state.get(subject, (0, 0.0, 0.0))[2]
        return max(0.0, end - self.clock.now())

    async def lift(self, subject: str) -> None:
        """End a ban now and forget the offences (an admin's pardon)."""
        if self.redis is not None:
            with translate_redis_errors("lifting a ban"):
                await self.redis.delete(self._keys(subject, 0)[1])
        self._state.pop(subject, None)
        self._violations.pop(subject, None)
