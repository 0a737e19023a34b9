"""An upstream pool: which endpoint gets the next request, and may it be sent now.

:class:`UpstreamPool` ties the resilience parts of one ``upstreams:`` entry together: the
balancing strategy (switchable at run time), active health checks, passive outlier detection,
one circuit breaker per endpoint, the retry budget and the admission queue. The proxy drives it:

.. code-block:: python

    async with pool.admission(priority):          # may raise QueueFull (503)
        ep = pool.pick(request, exclude)          # may raise NoHealthyUpstream (503)
        pool.on_start(ep)
        ...forward...
        pool.on_finish(ep, status=status, error=failed, latency=seconds)
        # (or pool.on_cancel(ep) if the attempt was abandoned without an outcome)
        if failed and idempotent and pool.retry_budget.allow_retry(): try another endpoint

Everything runs on one event loop; nothing here awaits except admission and health checks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from gatekeeper.errors import ConfigurationError, NoHealthyUpstream
from gatekeeper.gateway.http.tls import client_context
from gatekeeper.gateway.upstream.admission import AdmissionController, QueueConfig
from gatekeeper.gateway.upstream.balancing import (
    EWMA_DECAY,
    STRATEGIES,
    BalanceContext,
    Balancer,
    canonical_strategy,
    make_balancer,
)
from gatekeeper.gateway.upstream.breaker import BreakerConfig, BreakerState, CircuitBreaker
from gatekeeper.gateway.upstream.endpoint import Endpoint
from gatekeeper.gateway.upstream.health import HealthCheckConfig, HealthChecker
from gatekeeper.gateway.upstream.outlier import OutlierConfig, OutlierDetector
from gatekeeper.gateway.upstream.retry import RetryBudget, RetryBudgetConfig
from gatekeeper.types import Clock, EventEmitter, SystemClock

__all__ = ["UpstreamPool", "pool_from_config"]

_NOTHING: frozenset[Endpoint] = frozenset()
_HASHED = ("ring_hash", "maglev")
_CLOSED = BreakerState.CLOSED


class UpstreamPool:
    """The endpoints of one upstream and every rule that decides where requests go."""

    strategies = STRATEGIES

    def __init__(
        self,
        name: str,
        endpoints: Sequence[Endpoint],
        strategy: str = "round_robin",
        *,
        hash_on: str | None = None,
        health: HealthCheckConfig | None = None,
        outlier: OutlierConfig | None = None,
        breaker: BreakerConfig | None = None,
        retry: RetryBudgetConfig | None = None,
        max_concurrency: int | None = None,
        queue: QueueConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        metrics: Any = None,
    ) -> None:
        if not endpoints:
            raise ConfigurationError(f"upstream {name!r} needs at least one endpoint")
        addresses = [e.address for e in endpoints]
        if len(set(addresses)) != len(addresses):
            raise ConfigurationError(f"upstream {name!r} lists an endpoint twice: {addresses}")
        self.name = name
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.breaker_config = breaker or BreakerConfig()
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        for ep in self.endpoints:
            ep.breaker = CircuitBreaker(self.breaker_config, self._breaker_observer(ep))
        self.outlier = OutlierDetector(self.endpoints, outlier)
        self.retry_budget = RetryBudget(retry, self._clock)
        self.admission_control = AdmissionController(
            max_concurrency, queue, on_depth=self._queue_depth, on_wait=self._queue_wait
        )
        self.health: HealthChecker | None = (
            HealthChecker(
                lambda: self.endpoints, health, rng=self._rng, on_change=self._health_changed
            )
            if health
            else None
        )
        self._metrics: Any = None
        self.metrics = metrics
        # Where endpoint up/down and breaker opened/closed are reported (None: nowhere).
        self.events: EventEmitter | None = None
        self.hash_on = hash_on
        self.strategy = ""
        self._balancer: Balancer
        try:
            self.set_strategy(strategy, hash_on)
        except ConfigurationError as exc:
            raise ConfigurationError(f"upstream {name!r}: {exc}") from exc
        self.no_healthy = 0

    @property
    def clock(self) -> Clock:
        """The clock of every time-based rule of this pool (settable, e.g. to a FakeClock)."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        self.retry_budget.clock = clock

    @property
    def metrics(self) -> Any:
        """Where transitions are reported (``gatekeeper.observability.metrics.Metrics`` or any
        object with its ``endpoint_health``/``ejection``/``breaker``/``queue_depth_set``/
        ``queue_waited`` methods); ``None`` reports nothing."""
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: Any) -> None:
        self._metrics = metrics
        if metrics is not None:
            for ep in self.endpoints:
                metrics.endpoint_health(self.name, ep.address, ep.healthy)

    # -- the request path -------------------------------------------------------------------

    def pick(self, ctx: BalanceContext, exclude: Collection[Endpoint] = _NOTHING) -> Endpoint:
        """The endpoint for this request; raises NoHealthyUpstream when none may take it."""
        now = self._clock.monotonic()
        if not exclude:
            # A first attempt (retries always exclude the endpoints already tried): it is what
            # the retry budget is a share of.
            self.retry_budget.deposit(now)
        ep = self._balancer.pick(ctx, now, exclude)
        if ep is None:
            self.no_healthy += 1
            tried = f" ({len(exclude)} already tried)" if exclude else ""
            raise NoHealthyUpstream(
                f"upstream {self.name!r}: no endpoint is healthy, closed-circuit and "
                f"not ejected{tried}"
            )
        return ep

    def has_available(self) -> bool:
        """Whether an endpoint may take a request now (healthy, not ejected, breaker letting
        it through): what a geo route asks of each datacenter's pool."""
        now = self._clock.monotonic()
        # (Per request of a geo route: a plain loop costs less than any() on a generator.)
        for ep in self.endpoints:  # noqa: SIM110
            if ep.available(now):
                return True
        return False

    def latency_ms(self) -> float | None:
        """The lowest latency estimate (peak EWMA, ms) among the endpoints that may take a
        request now; ``None`` when none may."""
        now = self._clock.monotonic()
        best: float | None = None
        for ep in self.endpoints:
            if ep.available(now):
                latency = ep.latency(now, EWMA_DECAY) * 1000.0
                if best is None or latency < best:
                    best = latency
        return best

    def on_start(self, ep: Endpoint) -> None:
        """A request is being sent to ``ep`` (the one :meth:`pick` returned)."""
        ep.in_flight += 1
        ep.requests += 1
        breaker = ep.breaker
        if breaker.state is not _CLOSED:
            breaker.on_start(self._clock.monotonic())

    def on_cancel(self, ep: Endpoint) -> None:
        """The request to ``ep`` was abandoned without an outcome (the client went away, the
        task was cancelled): release what :meth:`on_start` took, judge nothing."""
        if ep.in_flight > 0:
            ep.in_flight -= 1
        ep.breaker.release_probe()

    def on_finish(
        self, ep: Endpoint, status: int | None = None, error: bool = False, latency: float = 0.0
    ) -> None:
        """The request to ``ep`` ended: ``status`` (``None`` if nothing came back), whether it
        failed (``error``: transport error or 5xx), and how long it took."""
        now = self._clock.monotonic()
        if ep.in_flight > 0:
            ep.in_flight -= 1
        failed = error or (status is not None and status >= 500)
        if failed:
            ep.failures += 1
        ep.observe_latency(latency, now, EWMA_DECAY)
        ep.breaker.record(now, not failed)
        if self.outlier.record(ep, now, status, failed) and self._metrics is not None:
            self._metrics.ejection(self.name, ep.address)

    def admission(self, priority: int = 0) -> AbstractAsyncContextManager[None]:
        """``async with pool.admission(priority):`` holds a concurrency slot (may queue)."""
        return self.admission_control.slot(priority)

    # -- control ----------------------------------------------------------------------------

    def set_strategy(self, strategy: str, hash_on: str | None = None) -> None:
        """Switch the balancing strategy at run time (ConfigurationError if unknown)."""
        name = canonical_strategy(strategy)
        if strategy.strip().lower().replace("-", "_") == "ip_hash":
            hash_on = "ip"  # the seeds' "IP hash" is the ring on the client address
        wanted = hash_on if hash_on is not None else self.hash_on
        hashed = name in _HASHED
        balancer = make_balancer(
            name, self.endpoints, hash_on=wanted if hashed else None, rng=self._rng
        )
        # Only now, with the new balancer built (it validates hash_on), switch over.
        self._balancer = balancer
        self.strategy = name
        self.hash_on = wanted

    def snapshot(self) -> dict[str, Any]:
        """Strategy, endpoints (health, ejection, breaker, load), queue and retry budget."""
        now = self._clock.monotonic()
        return {
            "name": self.name,
            "strategy": self.strategy,
            "hash_on": (self.hash_on or "ip") if self.strategy in _HASHED else None,
            "strategies": list(STRATEGIES),
            "health_checks": self.health is not None,
            "endpoints": [e.snapshot(now, EWMA_DECAY) for e in self.endpoints],
            "available": sum(1 for e in self.endpoints if e.available(now)),
            "ejected": self.outlier.ejected_count(now),
            "no_healthy_upstream": self.no_healthy,
            "admission": self.admission_control.snapshot(),
            "retry_budget": self.retry_budget.snapshot(),
        }

    # -- observers (called on transitions only, never per request) --------------------------

    def _breaker_observer(self, ep: Endpoint) -> Callable[[BreakerState], None]:
        def changed(state: BreakerState) -> None:
            if self._metrics is not None:
                self._metrics.breaker(self.name, ep.address, str(state))
            if self.events is not None and state is not BreakerState.HALF_OPEN:
                kind = "breaker.closed" if state is _CLOSED else "breaker.opened"
                self.events.emit(
                    kind, {"pool": self.name, "endpoint": ep.address}, subject=ep.address
                )

        return changed

    def _health_changed(self, ep: Endpoint, healthy: bool) -> None:
        if self._metrics is not None:
            self._metrics.endpoint_health(self.name, ep.address, healthy)
        if self.events is not None:
            kind = "upstream.up" if healthy else "upstream.down"
            self.events.emit(kind, {"pool": self.name, "endpoint": ep.address}, subject=ep.address)

    def _queue_depth(self, depth: int) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth_set(self.name, depth)

    def _queue_wait(self, seconds: float, rejected: str | None) -> None:
        if self._metrics is not None:
            self._metrics.queue_waited(self.name, seconds, rejected)

    async def start(self) -> None:
        """Start the active health checks (if configured)."""
        if self.health is not None:
            await self.health.start()

    async def stop(self) -> None:
        """Stop the active health checks."""
        if self.health is not None:
            await self.health.stop()


def pool_from_config(
    name: str, config: Any, *, clock: Clock | None = None, metrics: Any = None
) -> UpstreamPool:
    """Build a pool from a gateway ``upstreams:`` entry (``gateway.config.UpstreamConfig``).

    Read by attribute so that this module does not depend on the configuration models.
    """
    tls = getattr(config, "tls", None)
    context = None
    if any(getattr(e, "tls", False) for e in config.endpoints):
        context = client_context(
            verify=tls.verify if tls is not None else True,
            ca_file=tls.ca_file if tls is not None else None,
        )
    endpoints = [
        Endpoint(
            e.host,
            e.port,
            e.weight,
            tls=context if getattr(e, "tls", False) else None,
            server_name=tls.server_name if tls is not None else None,
        )
        for e in config.endpoints
    ]
    health = None
    if config.health is not None:
        h = config.health
        health = HealthCheckConfig(
            path=h.path,
            interval=h.interval,
            timeout=h.timeout,
            healthy_threshold=h.healthy_threshold,
            unhealthy_threshold=h.unhealthy_threshold,
        )
    o = config.outlier
    outlier = OutlierConfig(
        consecutive_failures=o.consecutive_failures,
        consecutive_connect_failures=min(3, o.consecutive_failures),
        base_ejection_time=o.base_ejection_time,
        max_ejection_time=max(300.0, o.base_ejection_time),
        max_ejection_percent=float(o.max_ejection_percent),
    )
    b = config.breaker
    breaker = BreakerConfig(
        consecutive_failures=b.consecutive_failures,
        error_ratio=b.error_ratio,
        min_requests=b.min_requests,
        window=b.window,
        open_for=b.open_for,
        half_open_probes=b.half_open_probes,
    )
    r = config.retry_budget
    retry = RetryBudgetConfig(ratio=r.ratio, min_per_second=r.min_per_second, window=r.window)
    queue = QueueConfig(size=config.queue.size, timeout=config.queue.timeout)
    return UpstreamPool(
        name,
        endpoints,
        config.strategy,
        hash_on=config.hash_on,
        health=health,
        outlier=outlier,
        breaker=breaker,
        retry=retry,
        max_concurrency=config.max_concurrency,
        queue=queue,
        clock=clock,
        metrics=metrics,
    )
