"""What a limit is: a rate, an algorithm, and what to do when the store fails.

A :class:`Policy` is configuration (immutable, validated on construction); a :class:`Check` is one
policy applied to one subject key for one request.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum

from gatekeeper.errors import ConfigurationError

__all__ = ["Algorithm", "Check", "FailureMode", "Policy", "Rate", "parse_rate"]

# Doubles represent integers exactly up to 2**53; both the Lua scripts and the memory store do
# their arithmetic in integer microseconds and scaled token units below this bound.
MAX_EXACT = 2**53

_PERIODS: dict[str, float] = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_RATE = re.compile(
    r"^\s*(?P<limit>\d+)\s*(?:/|per)\s*(?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*$",
    re.IGNORECASE,
)


class Algorithm(StrEnum):
    """The counting schemes the engine offers."""

    TOKEN_BUCKET = "token_bucket"
    """Refills ``limit`` tokens per ``period`` up to ``burst``; smooth, allows bursts."""
    GCRA = "gcra"
    """Token bucket expressed as a theoretical arrival time: one number of state per key."""
    FIXED_WINDOW = "fixed_window"
    """At most ``limit`` per calendar-aligned window; cheap, but allows 2x at a boundary."""
    SLIDING_WINDOW = "sliding_window"
    """Sliding-window counter: weighted previous window + current; close to exact, O(1)."""
    SLIDING_LOG = "sliding_log"
    """Exact: at most ``limit`` in any ``period``-long interval; O(limit) memory per key."""
    CONCURRENCY = "concurrency"
    """At most ``limit`` requests in flight; leases expire after ``lease_ttl`` seconds."""


class FailureMode(StrEnum):
    """What a policy answers when its store is down or slower than the deadline."""

    OPEN = "open"
    """Admit (availability first). With a ``fallback`` rate, limit locally instead."""
    CLOSED = "closed"
    """Deny (protection first)."""


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` hits per ``period`` seconds."""

    limit: int
    period: float

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit <= 0:
            raise ConfigurationError(f"rate limit must be a positive integer, got {self.limit!r}")
        if not math.isfinite(self.period) or self.period <= 0:
            raise ConfigurationError(f"rate period must be positive seconds, got {self.period!r}")
        if self.period_us < 1:
            raise ConfigurationError(f"rate period {self.period!r}s is below one microsecond")

    @property
    def period_us(self) -> int:
        return round(self.period * 1_000_000)

    def __str__(self) -> str:
        period = int(self.period) if float(self.period).is_integer() else self.period
        return f"{self.limit}/{period}s"


def parse_rate(text: str) -> Rate:
    """Parse ``"10/second"``, ``"5/10s"``, ``"1000 per hour"``, ``"100/min"`` into a :class:`Rate`.

    Raises :class:`ConfigurationError` naming the problem for anything else.
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"rate must be a string like '10/second', got {text!r}")
    match = _RATE.match(text)
    if match is None:
        raise ConfigurationError(
            f"rate {text!r} is malformed: write '<limit>/<period>', e.g. '10/second' or '5/10s'"
        )
    unit = match["unit"].lower()
    if unit not in _PERIODS:
        raise ConfigurationError(
            f"rate {text!r}: unknown period {unit!r} (use second, minute, hour or day)"
        )
    count = float(match["count"]) if match["count"] else 1.0
    limit = int(match["limit"])
    if limit == 0:
        raise ConfigurationError(f"rate {text!r}: the limit must be at least 1")
    if count == 0:
        raise ConfigurationError(f"rate {text!r}: the period must be longer than zero")
    return Rate(limit, count * _PERIODS[unit])


@dataclass(frozen=True, slots=True)
class Policy:
    """A named limit: ``rate`` counted by ``algorithm``.

    ``burst`` is the bucket's capacity for token bucket and GCRA (default: ``rate.limit``).
    ``failure`` and ``fallback`` say what happens when the store fails; ``fallback`` is a rate
    enforced in process while the store is unreachable (typically the global rate divided by
    the expected number of replicas). ``shadow`` policies are decided and reported but never deny.
    ``lease_ttl`` bounds how long a concurrency lease is held if its holder never releases it.
    """

    name: str
    rate: Rate
    algorithm: Algorithm = Algorithm.TOKEN_BUCKET
    burst: int | None = None
    failure: FailureMode = FailureMode.OPEN
    fallback: Rate | None = None
    shadow: bool = False
    lease_ttl: float = 60.0
    capacity: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigurationError(f"policy name must be a non-empty string, got {self.name!r}")
        if any(c in self.name for c in "{}") or len(self.name) > 128:
            raise ConfigurationError(f"policy {self.name!r}: name may not contain braces")
        rate: object = self.rate  # configuration files hand us strings
        if isinstance(rate, str):
            object.__setattr__(self, "rate", parse_rate(rate))
        elif not isinstance(rate, Rate):
            raise ConfigurationError(f"policy {self.name!r}: rate must be a Rate or a rate string")
        try:
            object.__setattr__(self, "algorithm", Algorithm(self.algorithm))
        except ValueError:
            known = ", ".join(a.value for a in Algorithm)
            raise ConfigurationError(
                f"policy {self.name!r}: unknown algorithm {self.algorithm!r} (one of {known})"
            ) from None
        try:
            object.__setattr__(self, "failure", FailureMode(self.failure))
        except ValueError:
            raise ConfigurationError(
                f"policy {self.name!r}: failure must be 'open' or 'closed', got {self.failure!r}"
            ) from None
        fallback: object = self.fallback
        if isinstance(fallback, str):
            object.__setattr__(self, "fallback", parse_rate(fallback))
        burst = self.rate.limit if self.burst is None else self.burst
        if isinstance(burst, bool) or not isinstance(burst, int) or burst <= 0:
            raise ConfigurationError(
                f"policy {self.name!r}: burst must be a positive integer, got {self.burst!r}"
            )
        if self.burst is not None and self.algorithm not in (
            Algorithm.TOKEN_BUCKET,
            Algorithm.GCRA,
        ):
            raise ConfigurationError(
                f"policy {self.name!r}: burst applies to token_bucket and gcra only"
            )
        if not math.isfinite(self.lease_ttl) or self.lease_ttl <= 0:
            raise ConfigurationError(f"policy {self.name!r}: lease_ttl must be positive seconds")
        if burst * self.rate.period_us >= MAX_EXACT:
            raise ConfigurationError(
                f"policy {self.name!r}: burst x period is too large to count exactly "
                f"({burst} x {self.rate.period}s); use a shorter period"
            )
        object.__setattr__(self, "capacity", burst)

    def check(self, key: str, cost: int = 1) -> Check:
        """``Check(self, key, cost)`` for the hot path: the same validation, done with two type
        tests instead of the frozen dataclass's ``__init__`` and ``__post_init__`` (a third of
        the cost); anything unusual goes through :class:`Check` itself and raises there."""
        if type(cost) is int and cost >= 0 and type(key) is str and key:
            check: Check = _new(Check)
            _set_policy(check, self)
            _set_key(check, key)
            _set_cost(check, cost)
            _set_peek(check, False)
            _set_lease_id(check, None)
            return check
        return Check(self, key, cost)

    @classmethod
    def parse(cls, name: str, rate: str, **options: object) -> Policy:
        """``Policy.parse("per-ip", "10/second", algorithm="gcra")``."""
        return cls(name, parse_rate(rate), **options)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Check:
    """One policy applied to one subject for one request.

    ``key`` names the subject (``"ip:203.0.113.7"``, ``"key:ab12"``); the store hash-tags it so
    that every key of one subject lives on one Redis Cluster shard. ``cost`` is the weight of the
    hit (0 is a free look). ``peek`` decides without debiting anything. ``lease_id`` identifies a
    concurrency lease so that it can be released later.
    """

    policy: Policy
    key: str
    cost: int = 1
    peek: bool = False
    lease_id: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.cost, bool) or not isinstance(self.cost, int) or self.cost < 0:
            raise ConfigurationError(f"cost must be a non-negative integer, got {self.cost!r}")
        if not self.key:
            raise ConfigurationError("a check needs a non-empty subject key")

    @property
    def storage_key(self) -> str:
        """The store key: ``gk:{subject}:policy``; the braces are the Cluster hash tag."""
        return self.storage_key_in("gk")

    def storage_key_in(self, prefix: str) -> str:
        """The store key under ``prefix``: ``{prefix}:{subject}:policy``.

        The subject is the Cluster hash tag, so every policy of one subject lives on one shard;
        braces inside the subject are replaced so that they cannot move the tag.
        """
        subject = self.key.replace("{", "(").replace("}", ")")
        return f"{prefix}:{{{subject}}}:{self.policy.name}"


# Check's slot setters, for Policy.check (a frozen dataclass refuses plain attribute writes).
_new = object.__new__
_set_policy = Check.__dict__["policy"].__set__
_set_key = Check.__dict__["key"].__set__
_set_cost = Check.__dict__["cost"].__set__
_set_peek = Check.__dict__["peek"].__set__
_set_lease_id = Check.__dict__["lease_id"].__set__
