"""The retry budget: retries may add at most a fixed share of extra load.

Per-request retry limits ("up to 3 attempts") multiply load exactly when a backend is already
in trouble. A budget (Finagle's ``RetryBudget``, Envoy's ``retry_budget``) caps retries across
the whole pool instead: in any rolling ``window``, retries may not exceed ``ratio`` x the
requests sent in that window, plus a small floor of ``min_per_second`` x ``window`` so that a
quiet pool can still retry at all.

Every first attempt *deposits* (:meth:`RetryBudget.deposit`); every retry must *withdraw*
(:meth:`RetryBudget.allow_retry`), which counts the retry when it answers ``True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.upstream.breaker import RollingWindow
from gatekeeper.types import Clock, SystemClock

__all__ = ["IDEMPOTENT_METHODS", "RetryBudget", "RetryBudgetConfig", "is_idempotent"]

#: Methods RFC 9110 section 9.2.2 calls idempotent: safe to send again to another endpoint.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def is_idempotent(method: str) -> bool:
    """Whether a request with this method may be retried on another endpoint."""
    return method.upper() in IDEMPOTENT_METHODS


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    """``ratio`` of extra load retries may add, a floor per second, and the window."""

    ratio: float = 0.2
    min_per_second: float = 10.0
    window: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise ConfigurationError(f"retry_budget.ratio must be in [0, 1], got {self.ratio}")
        if self.min_per_second < 0:
            raise ConfigurationError("retry_budget.min_per_second must be >= 0")
        if self.window <= 0:
            raise ConfigurationError("retry_budget.window must be > 0")


class RetryBudget:
    """The retry budget of one pool (see the module docstring)."""

    __slots__ = ("_counts", "_floor", "clock", "config", "denied")

    def __init__(self, config: RetryBudgetConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or RetryBudgetConfig()
        self.clock = clock or SystemClock()
        # a = first attempts (deposits), b = retries (withdrawals)
        self._counts = RollingWindow(self.config.window)
        self._floor = self.config.min_per_second * self.config.window
        self.denied = 0

    def deposit(self, now: float | None = None) -> None:
        """Count one request (a first attempt, not a retry); ``now`` saves a clock read."""
        self._counts.add(self.clock.monotonic() if now is None else now, 1, 0)

    def allow_retry(self) -> bool:
        """Withdraw one retry if the budget has room; ``False`` means: do not retry."""
        now = self.clock.monotonic()
        requests, retries = self._counts.totals(now)
        if retries + 1 > self.config.ratio * requests + self._floor:
            self.denied += 1
            return False
        self._counts.add(now, 0, 1)
        return True

    def snapshot(self) -> dict[str, Any]:
        """Requests and retries in the current window, and how many retries were refused."""
        requests, retries = self._counts.totals(self.clock.monotonic())
        return {
            "ratio": self.config.ratio,
            "window_requests": requests,
            "window_retries": retries,
            "available": max(0, int(self.config.ratio * requests + self._floor) - retries),
            "denied": self.denied,
        }
