"""The admission worker: every ``admission_frequency`` seconds, ``admission_limit`` become ready.

Run standalone (``gatekeeper worker``, or ``python -m gatekeeper worker``) or
embedded in ``serve``/``demo``. Any number may run against one Redis:

1. Each loop, a worker tries to take or renew the lease ``<prefix>:wr:lease:admission`` (a
   Redis key with a TTL, renewed only by its holder). Only the holder admits; the others wait.
2. The holder calls the store's admission step for every enabled tenant. Whether a tick is due
   is decided *inside* the store, against the tick schedule stored with the queue, atomically:
   two workers that both believe they lead (a paused holder whose lease expired) still cannot
   perform the same tick twice.
3. When the holder dies, its lease expires after ``lease_seconds``; another worker takes it and
   its first admission step performs the ticks that were missed meanwhile (bounded catch-up),
   so no tick is lost either.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from gatekeeper.errors import ConfigurationError, GatekeeperError

if TYPE_CHECKING:
    from gatekeeper.types import Clock, EventEmitter
    from gatekeeper.waitingroom.config import WaitingRoomSettings
    from gatekeeper.waitingroom.config_repository import CachedConfigs
    from gatekeeper.waitingroom.store import AdmitResult, WaitingRoomStore

__all__ = ["AdmissionWorker", "main"]

log = structlog.get_logger("gatekeeper.waitingroom.worker")


class AdmissionWorker:
    """Admits users of every tenant while it holds the admission lease."""

    def __init__(
        self,
        store: WaitingRoomStore,
        configs: CachedConfigs,
        clock: Clock,
        settings: WaitingRoomSettings,
        *,
        owner: str | None = None,
        metrics: Any = None,
        lease_name: str = "admission",
    ) -> None:
        self.store = store
        self.configs = configs
        self.clock = clock
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.metrics = metrics
        self.lease_name = lease_name
        self.leader = False
        # Where queueing/drained events go (the component sets context.events at start).
        self.events: EventEmitter | None = None
        self._queueing: set[str] = set()

    async def run_once(self) -> dict[str, AdmitResult] | None:
        """One pass: take/renew the lease, then admit what is due. ``None`` if not the leader."""
        now = self.clock.now()
        lease = self.settings.lease_seconds
        self.leader = await self.store.acquire_lease(self.lease_name, self.owner, lease, now)
        if not self.leader:
            return None
        results: dict[str, AdmitResult] = {}
        for tenant in await self.configs.tenants():
            config = await self.configs.get(tenant)
            if config is None:
                continue
            # A successor catches up with the ticks missed while the lease was orphaned (the
            # TTL plus a loaded machine's delays); a longer outage is not paid back at once.
            catch_up = max(3, math.ceil(5 * lease / config.admission_frequency) + 1)
            result = await self.store.admit(
                tenant,
                limit=config.admission_limit,
                frequency=config.admission_frequency,
                ready_ttl=config.ready_ttl_seconds,
                now=self.clock.now(),
                grace=self.settings.grace_seconds,
                max_catch_up=catch_up,
            )
            results[tenant] = result
            if result.ticks:
                log.info(
                    "admission_tick",
                    tenant=tenant,
                    ticks=result.ticks,
                    admitted=result.admitted,
                    skipped=result.skipped,
                    head=result.head,
                )
            self._record(tenant, result)
            if self.metrics is not None or self.events is not None:
                stats = await self.store.stats(tenant, self.clock.now())
                if self.metrics is not None:
                    self.metrics.waitingroom_length(tenant, stats.queued)
                self._report(tenant, stats.queued)
        return results

    def _report(self, tenant: str, queued: int) -> None:
        """Tell when a tenant's queue starts (someone waits) and when it is empty again."""
        events = self.events
        if events is None:
            return
        if queued > 0 and tenant not in self._queueing:
            self._queueing.add(tenant)
            events.emit(
                "waitingroom.queueing", {"tenant": tenant, "queued": queued}, subject=tenant
            )
        elif queued == 0 and tenant in self._queueing:
            self._queueing.discard(tenant)
            events.emit("waitingroom.drained", {"tenant": tenant}, subject=tenant)

    def _record(self, tenant: str, result: AdmitResult) -> None:
        if self.metrics is None:
            return
        if result.admitted:
            self.metrics.waitingroom_admitted(tenant, result.admitted)
        if result.abandoned:
            self.metrics.waitingroom_abandoned(tenant, result.abandoned)

    async def run(self, stop: asyncio.Event, *, interval: float | None = None) -> None:
        """Loop until ``stop`` is set; store failures are logged and retried, never fatal."""
        pause = interval or min(0.5, self.settings.lease_seconds / 3)
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                except GatekeeperError as exc:
                    log.warning("admission_failed", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
        finally:
            if self.leader:
                # Hand over at once instead of making the successor wait for the TTL.
                with contextlib.suppress(GatekeeperError):
                    await self.store.release_lease(self.lease_name, self.owner)


async def _serve(stop: asyncio.Event) -> int:
    from gatekeeper.persistence.db import Database
    from gatekeeper.settings import Settings
    from gatekeeper.types import SystemClock
    from gatekeeper.waitingroom.config import WaitingRoomSettings
    from gatekeeper.waitingroom.config_repository import CachedConfigs, SqlConfigRepository
    from gatekeeper.waitingroom.redis_store import RedisStore

    settings = Settings()
    wr = WaitingRoomSettings()
    if not settings.redis_url:
        print("gatekeeper worker: GATEKEEPER_REDIS_URL is required", file=sys.stderr)
        return 2
    try:
        store = RedisStore.from_url(settings.redis_url, prefix=wr.redis_prefix)
    except ConfigurationError as exc:
        print(f"gatekeeper worker: GATEKEEPER_REDIS_URL: {exc}", file=sys.stderr)
        return 2
    database = Database.from_settings(settings)
    clock = SystemClock()
    try:
        repository = SqlConfigRepository(database)
        await repository.ensure(settings.business_ids)
        configs = CachedConfigs(repository, clock, wr.config_cache_seconds)
        worker = AdmissionWorker(store, configs, clock, wr)
        log.info("worker_started", owner=worker.owner)
        await worker.run(stop)
    finally:
        await store.aclose()
        await database.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``gatekeeper worker``: run the admission worker until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="gatekeeper worker", description=__doc__)
    parser.parse_args(argv)

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await _serve(stop)

    return asyncio.run(go())
