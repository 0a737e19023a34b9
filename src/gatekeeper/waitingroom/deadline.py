"""The waiting-room store's deadline discipline: the limiter's, applied to the queue.

Every call to the Redis store passes through one :class:`StoreGuard`:

* a **deadline** per call (``GATEKEEPER_WAITINGROOM_STORE_DEADLINE_SECONDS``, default 0.25 s):
  a paused or unreachable Redis costs a request at most that long, then the caller gets a
  :class:`~gatekeeper.errors.StorageTimeout` (the API's 503 with ``Retry-After``);
* a **breaker** (the limiter's :class:`~gatekeeper.limits.resilience.Breaker`): after
  ``failure_threshold`` failed calls in a row it stops calling the store for a cool-down, so a
  dead store costs no latency at all; then one call probes whether it is back;
* **throttled logging**: one line per second per kind of failure, with how many were held back.

Coalesced enqueues and polls share one call per batch, so the deadline is armed once per batch,
not once per request. Calls of the admission worker are bounded too but do not count towards
the breaker: a slow admission step (a long sweep) is not an outage of the request path.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from gatekeeper.errors import StorageError, StorageTimeout
from gatekeeper.limits.resilience import Breaker, BreakerState, LogThrottle
from gatekeeper.types import Clock, SystemClock

__all__ = ["StoreGuard", "StoreUnavailable"]

T = TypeVar("T")


class StoreUnavailable(StorageError):
    """The breaker is open: the store was not called. ``retry_after`` is the cool-down left."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreGuard:
    """Bounds and guards the calls of one store (see the module docstring)."""

    def __init__(
        self,
        *,
        deadline: float = 0.25,
        worker_deadline: float = 5.0,
        failure_threshold: int = 3,
        cooldown: float = 1.0,
        clock: Clock | None = None,
        logger: Any = None,
    ) -> None:
        self.deadline = deadline
        self.worker_deadline = worker_deadline
        self.clock: Clock = clock or SystemClock()
        self.breaker = Breaker(
            failure_threshold=failure_threshold, cooldown=cooldown, clock=self.clock
        )
        self._log = LogThrottle(
            logger or structlog.get_logger("gatekeeper.waitingroom"), self.clock
        )

    @property
    def degraded(self) -> bool:
        """True while the breaker is not closed (the store is believed down)."""
        return self.breaker.state is not BreakerState.CLOSED

    def retry_after(self) -> int:
        """Whole seconds until the breaker lets a probe through (at least 1)."""
        breaker = self.breaker
        if breaker.state is BreakerState.CLOSED:
            return 1
        left = breaker.cooldown - (self.clock.monotonic() - breaker.opened_at)
        return max(1, math.ceil(left))

    async def call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` under the deadline and the breaker (request-path calls)."""
        breaker = self.breaker
        if not breaker.allow():
            raise StoreUnavailable(
                "waiting room store unavailable (breaker open)", self.retry_after()
            )
        try:
            async with asyncio.timeout(self.deadline):
                result = await call()
        except TimeoutError as exc:
            breaker.failure()
            self._failed(what, "timeout", exc)
            raise StorageTimeout(
                f"waiting room store did not answer {what} within {self.deadline} s"
            ) from exc
        except StorageError as exc:
            breaker.failure()
            self._failed(what, "error", exc)
            raise
        except BaseException:
            # Cancelled by our caller, or a bug of ours: no verdict on the store. A probe that
            # ends so must not leave the breaker half-open (nothing else would close it).
            if breaker.state is BreakerState.HALF_OPEN:
                breaker.failure()
            raise
        breaker.success()
        return result

    async def background(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` under the worker's deadline; failures are the worker's to log."""
        try:
            async with asyncio.timeout(self.worker_deadline):
                return await call()
        except TimeoutError as exc:
            raise StorageTimeout(
                f"waiting room store did not answer {what} within {self.worker_deadline} s"
            ) from exc

    def _failed(self, what: str, reason: str, exc: BaseException) -> None:
        self._log.warning(
            "waitingroom.store_failed",
            call=what,
            reason=reason,
            breaker=self.breaker.state.value,
            error=repr(exc),
        )
