"""What the limiter does when its store fails: a breaker, the failure modes, a local fallback.

The store is called once per batch under a deadline. When the call fails or times out, every
check of the batch is decided *degraded*, policy by policy:

- ``failure=closed`` denies (``retry_after`` of about one second);
- ``failure=open`` with a ``fallback`` rate decides the check in a private in-process memory
  store at that rate (the global rate divided by the expected number of replicas);
- ``failure=open`` without a fallback admits.

A group stays all-or-nothing: a closed policy denying means nothing is debited in the fallback.

The :class:`Breaker` stops calling a store that keeps failing (so that a dead Redis costs no
latency at all) and lets one real call through after a cool-down to find out whether it is back.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.decision import PolicyResult
from gatekeeper.limits.policy import Check, FailureMode, Policy
from gatekeeper.types import Clock, EventEmitter, SystemClock

if TYPE_CHECKING:
    from gatekeeper.types import Storage

__all__ = ["Breaker", "BreakerState", "Degraded", "FailurePolicy", "LogThrottle"]


class BreakerState(enum.StrEnum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    """Calls go to the store."""
    OPEN = "open"
    """Calls are not attempted until the cool-down has passed."""
    HALF_OPEN = "half_open"
    """One probe call is in flight; everything else is still degraded."""


class Breaker:
    """Consecutive-failure circuit breaker with a half-open probe.

    ``failure_threshold`` consecutive failed calls open it for ``cooldown`` seconds; the first
    call after the cool-down is the probe: its success closes the breaker, its failure opens it
    for another cool-down. Time comes from the injected clock's monotonic reading.
    """

    def __init__(
        self, *, failure_threshold: int = 3, cooldown: float = 1.0, clock: Clock | None = None
    ) -> None:
        if failure_threshold < 1:
            raise ConfigurationError(
                f"breaker failure_threshold must be >= 1, got {failure_threshold!r}"
            )
        if not cooldown > 0:
            raise ConfigurationError(f"breaker cooldown must be positive seconds, got {cooldown!r}")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.clock: Clock = clock or SystemClock()
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.transitions = 0
        # Where limiter.degraded/recovered are reported (the events component connects it).
        self.events: EventEmitter | None = None

    def allow(self) -> bool:
        """May a call go to the store now? Turns OPEN into HALF_OPEN once the cool-down ends."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN and self.clock.monotonic() - self.opened_at >= self.cooldown:
            self.state = BreakerState.HALF_OPEN  # this caller carries the probe
            self.transitions += 1
            return True
        return False

    def success(self) -> None:
        """A call succeeded: close (a successful probe lets the store back)."""
        self.failures = 0
        if self.state is not BreakerState.CLOSED:
            self.state = BreakerState.CLOSED
            self.transitions += 1
            if self.events is not None:
                self.events.emit("limiter.recovered", {})

    def failure(self) -> None:
        """A call failed or timed out: count it, and open past the threshold or on a probe."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.failure_threshold
        ):
            if self.events is not None and self.state is BreakerState.CLOSED:
                self.events.emit("limiter.degraded", {"reason": "the limit store fails"})
            self.state = BreakerState.OPEN
            self.opened_at = self.clock.monotonic()
            self.transitions += 1


class Degraded(list[PolicyResult]):
    """The results of one group decided without the store; ``reason`` says why."""

    __slots__ = ("reason",)

    def __init__(self, results: list[PolicyResult], reason: str) -> None:
        super().__init__(results)
        self.reason = reason


class LogThrottle:
    """At most one log line per ``interval`` seconds per event; counts what it held back."""

    def __init__(self, logger: Any, clock: Clock, interval: float = 1.0) -> None:
        self.logger = logger
        self.clock = clock
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` unless it was logged less than ``interval`` seconds ago."""
        now = self.clock.monotonic()
        last = self._last.get(event)
        if last is not None and now - last < self.interval:
            self._held[event] = self._held.get(event, 0) + 1
            return
        self._last[event] = now
        suppressed = self._held.pop(event, 0)
        self.logger.warning(event, suppressed=suppressed, **fields)


class FailurePolicy:
    """Decides groups without the store, following each policy's ``failure`` and ``fallback``."""

    def __init__(
        self,
        *,
        clock: Clock,
        closed_retry_after: float = 1.0,
        fallback_storage: Storage | None = None,
    ) -> None:
        self.clock = clock
        self.closed_retry_after = closed_retry_after
        self._fallback_storage = fallback_storage
        self._fallback_sync: Callable[..., list[list[PolicyResult]]] | None = None
        self._fallback_policies: dict[Policy, Policy] = {}

    @property
    def fallback_storage(self) -> Storage:
        """The private in-process store of fallback limits (created on first use)."""
        if self._fallback_storage is None:
            from gatekeeper.limits.storage import storage_from_url

            self._fallback_storage = storage_from_url("memory://", clock=self.clock)
        return self._fallback_storage

    def fallback_policy(self, policy: Policy) -> Policy:
        """``policy`` with its fallback rate (and its capacity scaled down with it)."""
        local = self._fallback_policies.get(policy)
        if local is None:
            assert policy.fallback is not None
            local = Policy(
                policy.name,
                policy.fallback,
                algorithm=policy.algorithm,
                shadow=policy.shadow,
                lease_ttl=policy.lease_ttl,
            )
            self._fallback_policies[policy] = local
        return local

    async def decide(self, groups: Sequence[Sequence[Check]], reason: str) -> list[Degraded]:
        """Decide every group degraded; the result lists mirror ``storage.decide``'s."""
        out: list[Degraded] = []
        for group in groups:
            out.append(Degraded(await self._decide_group(group), reason))
        return out

    async def _decide_group(self, group: Sequence[Check]) -> list[PolicyResult]:
        # Pass 1: a closed policy denies the whole group; nothing local is debited then.
        denies = any(c.policy.failure is FailureMode.CLOSED and not c.policy.shadow for c in group)
        local: list[Check] = []
        if not denies:
            local = [
                Check(self.fallback_policy(c.policy), c.key, c.cost, c.peek, c.lease_id)
                for c in group
                if c.policy.failure is FailureMode.OPEN and c.policy.fallback is not None
            ]
        local_results: list[PolicyResult] = []
        if local:
            storage = self.fallback_storage
            sync = getattr(storage, "decide_sync", None)
            if sync is not None:
                local_results = sync([local])[0]
            else:
                local_results = (await storage.decide([local]))[0]
        results: list[PolicyResult] = []
        it = iter(local_results)
        for check in group:
            policy = check.policy
            if policy.failure is FailureMode.CLOSED:
                results.append(self._closed(policy))
            elif policy.fallback is not None and not denies:
                results.append(next(it))
            else:
                results.append(_open(policy))
        return results

    def _closed(self, policy: Policy) -> PolicyResult:
        wait = self.closed_retry_after
        return PolicyResult(policy.name, False, policy.rate.limit, 0, wait, wait, policy.shadow)

    async def release(self, checks: Sequence[Check], lease_id: str) -> None:
        """Give back leases that were taken in the fallback store while degraded."""
        local = [
            Check(self.fallback_policy(c.policy), c.key, c.cost, c.peek, c.lease_id)
            for c in checks
            if c.policy.fallback is not None
        ]
        if local and self._fallback_storage is not None:
            await self._fallback_storage.release(local, lease_id)

    async def aclose(self) -> None:
        if self._fallback_storage is not None:
            await self._fallback_storage.aclose()


def _open(policy: Policy) -> PolicyResult:
    """Fail-open without a fallback: admitted, and nothing is known about the quota."""
    return PolicyResult(
        policy.name, True, policy.rate.limit, policy.capacity, 0.0, 0.0, policy.shadow
    )
