"""The observability component: shared metrics and access log, live statistics, dashboards.

The composition root mounts it like any other component::

    from gatekeeper.observability.component import create_component
    component = create_component(context)          # endpoints(), start(), stop()

and the gateway's hot path takes the shared recorders from the same context, whichever of the
two runs first::

    obs = Observability.of(context)                # created once per Context
    obs.metrics.request(route, status, upstream, seconds)
    obs.access_log.emit(AccessEntry(...))

The gateway's current configuration (``context.snapshot``, published by the composition root
on every build) is read when the component computes a dashboard view, so that the two may start
in any order: its pools give the dashboard strategies and endpoint health, its routes the limits
of ``/api/v1/rate-status``, its ``geo`` (when the file routes by location) the geo panel's
numbers (``/geo/stats`` of this replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import StorageError
from gatekeeper.observability.access import AccessLog
from gatekeeper.observability.events import LiveStats
from gatekeeper.observability.live_store import MemoryLiveStore, RedisLiveStore
from gatekeeper.observability.logging import get_logger
from gatekeeper.observability.metrics import Metrics

if TYPE_CHECKING:
    from gatekeeper.component import Context
    from gatekeeper.endpoints import Endpoint

__all__ = ["Observability", "ObservabilityComponent", "create_component"]

# How long one flush and snapshot of the live statistics may wait for the store.
_STORE_TIMEOUT = 1.0


@dataclass
class Observability:
    """The recorders of one process: Prometheus metrics, the access log, live statistics."""

    metrics: Metrics
    access_log: AccessLog
    live: LiveStats

    @classmethod
    def of(cls, context: Context, *, live_prefix: str = "gatekeeper:live") -> Observability:
        """The context's shared instance, created on first use (live stats go to Redis when
        the context has a Redis client, else they stay in process)."""
        if (
            context.metrics is not None
            and context.access_log is not None
            and context.live is not None
        ):
            return cls(context.metrics, context.access_log, context.live)
        store = (
            RedisLiveStore(context.redis, prefix=live_prefix)
            if context.redis is not None
            else MemoryLiveStore()
        )
        live = LiveStats(context.clock, store)
        # The composition root may have created the process's Metrics already (for /metrics).
        metrics = context.metrics if context.metrics is not None else Metrics()
        metrics.live = live
        # Lines are written in batches; the component's ticker flushes twice a second.
        access_log = AccessLog(buffer_lines=256)
        access_log.add_sink(live.record)
        context.metrics, context.access_log, context.live = metrics, access_log, live
        return cls(metrics, access_log, live)


class ObservabilityComponent:
    """Flushes live statistics twice a second and serves the dashboards and JSON APIs."""

    name = "observability"

    def __init__(
        self,
        context: Context,
        *,
        flush_interval: float = 0.5,
        snapshot_interval: float = 1.0,
        live_prefix: str = "gatekeeper:live",
    ) -> None:
        self.context = context
        self.obs = Observability.of(context, live_prefix=live_prefix)
        self.flush_interval = flush_interval
        self.snapshot_interval = snapshot_interval
        self.started = time.monotonic()
        self._log = get_logger("gatekeeper.observability")
        self._task: asyncio.Task[None] | None = None
        self._latest: dict[str, Any] | None = None
        self._changed = asyncio.Condition()
        self._generation = 0
        self._last_error_log = 0.0

    @property
    def mode(self) -> str:
        """``cluster`` when numbers come from Redis (every replica), ``local`` otherwise."""
        return "cluster" if isinstance(self.obs.live.store, RedisLiveStore) else "local"

    @property
    def generation(self) -> int:
        """The number of the latest published view."""
        return self._generation

    def endpoints(self) -> list[Endpoint]:
        from gatekeeper.observability.dashboard.routes import dashboard_endpoints

        return dashboard_endpoints(self)

    async def start(self) -> None:
        """Start the flush/snapshot loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="observability-ticker")

    async def stop(self) -> None:
        """Stop the loop and flush what is pending (best effort)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.obs.access_log.flush()
        with contextlib.suppress(StorageError):
            await self.obs.live.flush()
        self.obs.metrics.close()

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        # Step by step: flush every ``flush_interval`` (Redis gets this replica's increments),
        # and every ``snapshot_interval`` read the merged view once for all dashboard clients.
        # (Whether a tick snapshots is decided before it runs: deciding after it made every
        # slow tick, e.g. one waiting out a frozen Redis, skip the snapshot that fell due.)
        next_snapshot = 0.0
        while True:
            due = time.monotonic() >= next_snapshot
            if due:
                next_snapshot = time.monotonic() + self.snapshot_interval
            await self.tick(snapshot=due)
            await asyncio.sleep(self.flush_interval)

    async def tick(self, *, snapshot: bool = True) -> None:
        """One flush, then (optionally) a new snapshot for the SSE clients. Never raises for a
        store failure: the dashboard keeps its last numbers and says it is stale."""
        self.obs.access_log.flush()
        try:
            # Bounded: a frozen Redis (no error, no answer) must not freeze the page with it.
            async with asyncio.timeout(_STORE_TIMEOUT):
                await self.obs.live.flush()
                view = await self.snapshot() if snapshot else None
            if view is not None:
                await self.publish(view)
        except (StorageError, TimeoutError) as exc:
            now = time.monotonic()
            if now - self._last_error_log > 30:
                self._last_error_log = now
                self._log.warning("live statistics unavailable", error=str(exc) or repr(exc))
            if snapshot and self._latest is not None:
                # The shared numbers are stale, but this replica's limiter is known: a store
                # outage is exactly when the page must say that it decides without the store.
                await self.publish({**self._latest, "stale": True, "limiter": self._limiter()})

    async def snapshot(self) -> dict[str, Any]:
        """The dashboard's full view: live numbers plus pools and limiter counters."""
        view = await self.obs.live.snapshot()
        view["mode"] = self.mode
        view["stale"] = False
        view["uptime_seconds"] = round(time.monotonic() - self.started, 1)
        view["pools"] = await self._gateway_pools()
        view["geo"] = self._gateway_geo()
        view["limiter"] = self._limiter()
        return view

    def _limiter(self) -> dict[str, Any] | None:
        """This replica's limiter counters and state (``ok`` or ``degraded``)."""
        limiter = self.context.limiter
        return limiter.stats.as_dict() if limiter is not None else None

    async def _gateway_pools(self) -> list[dict[str, Any]]:
        snapshot = self.context.snapshot
        if snapshot is None:
            return []
        try:
            return [{"name": name, **pool.snapshot()} for name, pool in snapshot.pools.items()]
        except Exception as exc:  # the gateway's stats must not take the dashboard down
            self._log.warning("gateway stats failed", error=str(exc))
            return []

    def _gateway_geo(self) -> dict[str, Any] | None:
        """This replica's geographic routing (``/geo/stats``), or None when not configured."""
        geo = self.context.snapshot.geo if self.context.snapshot is not None else None
        if geo is None:
            return None
        try:
            return dict(geo.describe())
        except Exception as exc:  # the gateway's stats must not take the dashboard down
            self._log.warning("geo stats failed", error=str(exc))
            return None

    # -- SSE fan-out --------------------------------------------------------------------------

    async def publish(self, view: dict[str, Any]) -> None:
        """Hand a new view to every waiting SSE client."""
        async with self._changed:
            self._latest = view
            self._generation += 1
            self._changed.notify_all()

    async def latest(self) -> dict[str, Any]:
        """The last published view (computing one if none was published yet)."""
        if self._latest is None:
            await self.tick()
        if self._latest is None:  # the store is down and never answered
            return {"stale": True, "mode": self.mode}
        return self._latest

    async def next_view(self, after: int, wait: float) -> tuple[int, dict[str, Any] | None]:
        """Wait up to ``wait`` seconds for a view newer than generation ``after``; ``None`` if
        none came."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._generation > after), wait
                )
            if self._generation > after:
                return self._generation, self._latest
            return after, None


def create_component(context: Context) -> ObservabilityComponent:
    """The factory the composition root calls."""
    return ObservabilityComponent(context, live_prefix=context.settings.live_stats_prefix)
