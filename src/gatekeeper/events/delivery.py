"""The delivery loop: one leader per cluster drains an outbox (group) into its sinks.

The events component runs one loop per sink, each on the sink's own consumer group and lease
(``outbox.group(sink.name)``), so that a sink that is down holds back no other. Each pass of
:meth:`Deliverer.run_once`:

1. Take or renew the outbox's lease (``outbox.lead``); a replica that does not hold it only
   waits. (Every replica runs this loop; whichever holds the lease delivers.)
2. Read a batch: entries a dead leader left unacknowledged first, then new ones.
3. For every sink at once: plan the deliveries, send them, and retry the failed ones with
   exponential backoff (jittered, capped) up to ``max_attempts``; what still fails is written
   to the dead-letter list. Each try is recorded (the admin's recent deliveries). Between
   retries the lease is renewed; a leader that lost it (or is stopping) abandons the batch
   without acknowledging it, so that the new leader delivers it again.
4. Acknowledge the batch only now: each of its events was delivered or dead-lettered by every
   sink. A leader killed before this point loses nothing (its entries stay pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from gatekeeper.errors import GatekeeperError
from gatekeeper.events.model import Event
from gatekeeper.events.outbox import Outbox
from gatekeeper.events.sinks.base import Attempt, Sink

__all__ = ["Deliverer", "DeliveryOptions"]

_log = structlog.get_logger("gatekeeper.events.delivery")


class _Abandoned(Exception):
    """The batch is left unacknowledged (lease lost, or stopping)."""


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """How hard the leader tries."""

    batch: int = 500
    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    lease_seconds: float = 10.0
    # How long one read waits for new entries.
    poll: float = 0.5


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _error_text(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text[:300]


class Deliverer:
    """Delivers the outbox's events to ``sinks`` while this process holds the lease."""

    def __init__(
        self,
        outbox: Outbox,
        sinks: Sequence[Sink],
        options: DeliveryOptions | None = None,
        *,
        owner: str | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.sinks = list(sinks)
        self.options = options or DeliveryOptions()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.leader = False
        self.delivered = 0
        self.dead = 0
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self._stopping = False

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failed try (jittered exponential)."""
        options = self.options
        delay = min(options.backoff_max, options.backoff_base * 2 ** (attempt - 1))
        return float(delay) * (0.5 + self._rng.random() / 2)

    async def run_once(self, wait: float | None = None) -> int | None:
        """One pass; how many events were acknowledged (``None``: not the leader)."""
        options = self.options
        self.leader = await self.outbox.lead(self.owner, options.lease_seconds)
        if not self.leader:
            return None
        entries = await self.outbox.read(
            self.owner, options.batch, options.poll if wait is None else wait
        )
        if not entries:
            return 0
        events = [event for _, event in entries]
        if not await self._deliver_all(events):
            return 0
        await self.outbox.ack([entry_id for entry_id, _ in entries])
        self.delivered += len(entries)
        return len(entries)

    async def _deliver_all(self, events: list[Event]) -> bool:
        """Every sink's deliveries at once; False if the batch was abandoned."""
        abandoned = False
        try:
            # A task group: when one sink abandons the batch, the others stop too.
            async with asyncio.TaskGroup() as group:
                for sink in self.sinks:
                    group.create_task(self._deliver(sink, events))
        except* _Abandoned:
            abandoned = True
        return not abandoned

    async def _deliver(self, sink: Sink, events: list[Event]) -> None:
        try:
            pending = await sink.plan(events)
        except GatekeeperError as exc:
            # (Webhook subscriptions unreadable: the batch waits for the database.)
            _log.warning("events_plan_failed", sink=sink.name, error=str(exc))
            await self._pause(1)
            raise _Abandoned from exc
        tries = 0
        while pending:
            tries += 1
            try:
                results = await sink.send(pending)
            except Exception as exc:  # a sink's bug must not stop delivery of the others
                _log.exception("events_sink_failed", sink=sink.name)
                results = [exc] * len(pending)
            failed: list[Attempt] = []
            records = []
            at = _now_iso()
            for attempt, error in zip(pending, results, strict=True):
                record = {
                    "event_id": attempt.event.id,
                    "type": attempt.event.type,
                    "target": attempt.target,
                    "attempt": tries,
                    "at": at,
                    "status": "delivered" if error is None else "failed",
                }
                if error is not None:
                    record["error"] = _error_text(error)
                    failed.append(attempt)
                records.append(record)
            await self._keep(self.outbox.record(records))
            if not failed:
                return
            if tries >= self.options.max_attempts:
                dead = [
                    {
                        "event": a.event.envelope(),
                        "target": a.target,
                        "attempts": tries,
                        "error": r.get("error", ""),
                        "at": at,
                    }
                    for a, r in zip(pending, records, strict=True)
                    if r["status"] == "failed"
                ]
                self.dead += len(dead)
                _log.warning("events_dead_lettered", sink=sink.name, count=len(dead))
                await self._keep(self.outbox.dead_letter(dead))
                return
            pending = failed
            await self._pause(tries)

    async def _pause(self, tries: int) -> None:
        """Wait before the next try, still holding the lease (else abandon the batch)."""
        await self._sleep(self.backoff(tries))
        if self._stopping:
            raise _Abandoned
        try:
            held = await self.outbox.lead(self.owner, self.options.lease_seconds)
        except GatekeeperError:
            held = False
        if not held:
            self.leader = False
            raise _Abandoned

    async def _keep(self, write: Awaitable[None]) -> None:
        """Write a record; the admin view is not worth failing a delivery for."""
        try:
            await write
        except GatekeeperError as exc:
            _log.warning("events_record_failed", error=str(exc))

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` is set; outbox failures are logged and retried, never fatal."""
        pause = min(1.0, self.options.lease_seconds / 3)
        try:
            while not stop.is_set():
                try:
                    done = await self.run_once()
                except GatekeeperError as exc:
                    _log.warning("events_delivery_failed", error=str(exc))
                    done = None
                if done is None:  # not the leader (or the outbox failed): wait, then ask again
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), pause)
        finally:
            if self.leader:
                # Hand over at once instead of making the successor wait for the TTL.
                with contextlib.suppress(GatekeeperError):
                    await self.outbox.resign(self.owner)

    def stop_soon(self) -> None:
        """Make a batch in its retries give up at its next pause (shutdown)."""
        self._stopping = True
