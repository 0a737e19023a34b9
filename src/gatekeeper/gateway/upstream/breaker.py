"""A circuit breaker per endpoint: closed, open, half-open.

Closed
    every request goes through; outcomes are counted in a rolling window. The breaker trips
    (opens) on ``consecutive_failures`` failures in a row, or when at least ``min_requests``
    requests in the window failed at a ratio of ``error_ratio`` or more.
Open
    nothing goes through for ``open_for`` seconds; then the breaker turns half-open.
Half-open
    at most ``half_open_probes`` requests are in flight at a time. ``success_threshold``
    successes close the breaker (with a fresh window); one failure opens it again.

Time comes from an injected :class:`~gatekeeper.types.Clock` reading passed in as ``now``
(monotonic seconds), so tests drive every transition with a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gatekeeper.errors import ConfigurationError

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker", "RollingWindow"]


class BreakerState(StrEnum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = BreakerState.CLOSED


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker trips and how it recovers (``enabled=False`` never trips)."""

    enabled: bool = True
    consecutive_failures: int = 5
    error_ratio: float = 0.5
    min_requests: int = 20
    window: float = 10.0
    open_for: float = 30.0
    half_open_probes: int = 1
    success_threshold: int = 1

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ConfigurationError("breaker.consecutive_failures must be >= 1")
        if not 0.0 < self.error_ratio <= 1.0:
            raise ConfigurationError("breaker.error_ratio must be in (0, 1]")
        if self.min_requests < 1:
            raise ConfigurationError("breaker.min_requests must be >= 1")
        if self.window <= 0 or self.open_for <= 0:
            raise ConfigurationError("breaker.window and breaker.open_for must be > 0")
        if self.half_open_probes < 1 or self.success_threshold < 1:
            raise ConfigurationError(
                "breaker.half_open_probes and breaker.success_threshold must be >= 1"
            )


class RollingWindow:
    """Two counters summed over the last ``window`` seconds, in ``buckets`` slices.

    Adding is O(1) (and cheap while time stays in the current slice, the common case on the
    request path); reading the totals is O(buckets). A slice is reset lazily when time comes
    round to it again, so an idle window costs nothing.
    """

    __slots__ = ("_a", "_b", "_current", "_epoch", "_index", "_n", "_per_second")

    def __init__(self, window: float, buckets: int = 10) -> None:
        self._n = buckets
        self._per_second = buckets / window  # slices per second
        self._epoch = [-1] * buckets
        self._a = [0] * buckets
        self._b = [0] * buckets
        self._current = -1  # the epoch of the slice last written
        self._index = 0

    def add(self, now: float, a: int, b: int) -> None:
        """Count ``a`` and ``b`` at time ``now``."""
        epoch = int(now * self._per_second)
        if epoch != self._current:
            self._current = epoch
            i = self._index = epoch % self._n
            if self._epoch[i] != epoch:
                self._epoch[i] = epoch
                self._a[i] = 0
                self._b[i] = 0
        i = self._index
        self._a[i] += a
        self._b[i] += b

    def totals(self, now: float) -> tuple[int, int]:
        """The sums of ``a`` and ``b`` over the window ending at ``now``."""
        lowest = int(now * self._per_second) - self._n + 1
        total_a = total_b = 0
        for i in range(self._n):
            if self._epoch[i] >= lowest:
                total_a += self._a[i]
                total_b += self._b[i]
        return total_a, total_b

    def clear(self) -> None:
        """Forget everything counted so far."""
        for i in range(self._n):
            self._epoch[i] = -1
            self._a[i] = 0
            self._b[i] = 0
        self._current = -1


class CircuitBreaker:
    """The breaker of one endpoint. Call :meth:`allows` before, :meth:`record` after."""

    __slots__ = (
        "_consecutive",
        "_half_open_successes",
        "_probe_deadline",
        "_probes",
        "_window",
        "config",
        "on_change",
        "opened_at",
        "state",
        "trips",
    )

    def __init__(
        self,
        config: BreakerConfig | None = None,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        #: Called with the new state on every transition (metrics); never on the hot path.
        self.on_change = on_change
        self.state = BreakerState.CLOSED
        self.opened_at = 0.0
        self.trips = 0
        self._consecutive = 0
        self._probes = 0
        self._probe_deadline = 0.0
        self._half_open_successes = 0
        self._window = RollingWindow(self.config.window)

    def allows(self, now: float) -> bool:
        """May a request be sent now? (Turns an expired open breaker half-open.)"""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            if now < self.opened_at + self.config.open_for:
                return False
            self._half_open()
        if self._probes < self.config.half_open_probes:
            return True
        if now >= self._probe_deadline:
            self._probes = 0  # the probes in flight were lost; let new ones through
            return True
        return False

    def on_start(self, now: float) -> None:
        """A request was sent; in half-open state it takes one of the probe slots."""
        if self.state is BreakerState.HALF_OPEN:
            self._probes += 1
            # A probe whose outcome never arrives must not keep the endpoint out for good.
            self._probe_deadline = now + self.config.open_for

    def release_probe(self) -> None:
        """A request ended without an outcome (cancelled): free its probe slot, if any."""
        if self.state is BreakerState.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    def record(self, now: float, ok: bool) -> None:
        """Count the outcome of a request that finished at ``now``."""
        config = self.config
        state = self.state
        if state is _CLOSED:
            if ok:
                self._window.add(now, 1, 0)
                self._consecutive = 0
                return
            self._window.add(now, 1, 1)
            self._consecutive += 1
            if not config.enabled:
                return
            if self._consecutive >= config.consecutive_failures:
                self._open(now)
                return
            requests, failures = self._window.totals(now)
            if requests >= config.min_requests and failures >= config.error_ratio * requests:
                self._open(now)
        elif state is BreakerState.HALF_OPEN:
            if self._probes > 0:
                self._probes -= 1
            if not ok:
                self._open(now)
                return
            self._half_open_successes += 1
            if self._half_open_successes >= config.success_threshold:
                self._close()
        # OPEN: a request sent before the breaker tripped finished late; it changes nothing.

    def reset(self) -> None:
        """Close the breaker and forget its history (admin action)."""
        self._close()

    def snapshot(self, now: float) -> dict[str, Any]:
        """State, trips and the current window, for ``/stats``."""
        requests, failures = self._window.totals(now)
        retry_in = 0.0
        if self.state is BreakerState.OPEN:
            retry_in = max(0.0, self.opened_at + self.config.open_for - now)
        return {
            "state": str(self.state),
            "trips": self.trips,
            "window_requests": requests,
            "window_failures": failures,
            "consecutive_failures": self._consecutive,
            "half_open_in": round(retry_in, 3),
        }

    def _open(self, now: float) -> None:
        self.opened_at = now
        self.trips += 1
        self._enter(BreakerState.OPEN)

    def _half_open(self) -> None:
        self._enter(BreakerState.HALF_OPEN)

    def _close(self) -> None:
        self._consecutive = 0
        self._window.clear()
        self._enter(BreakerState.CLOSED)

    def _enter(self, state: BreakerState) -> None:
        changed = state is not self.state
        self.state = state
        self._probes = 0
        self._half_open_successes = 0
        if changed and self.on_change is not None:
            self.on_change(state)
