"""The events component: the emitter every part reports to, the flusher, the delivery loop.

Built from the shared :class:`~gatekeeper.component.Context`: with Redis, the outbox is the
shared Redis stream and the replicas elect one delivering leader; without, an in-process
outbox. It sets ``context.events`` (the :class:`~gatekeeper.types.EventEmitter` the other
components emit through) and its rate-limit spike counter as ``context.ratelimit_spikes``.

Start: the flusher (buffer -> outbox every ``flush_interval``) and the delivery loop run as two
background tasks. Stop, in order: the flusher stops and flushes once more (what was emitted
reaches the outbox); the delivery loop is told to stop and, in the embedded mode, first drains
the in-process outbox for up to ``DRAIN_SECONDS``; a batch still retrying is abandoned
unacknowledged (Redis keeps it for the next leader); the sinks close.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import structlog

from gatekeeper.errors import GatekeeperError
from gatekeeper.events.admin import events_admin_endpoints
from gatekeeper.events.delivery import Deliverer, DeliveryOptions
from gatekeeper.events.emitter import BufferedEmitter
from gatekeeper.events.outbox import MemoryOutbox, Outbox
from gatekeeper.events.redis_outbox import RedisOutbox
from gatekeeper.events.settings import EventSettings
from gatekeeper.events.sinks.base import Sink
from gatekeeper.events.sinks.brokers import broker_from_url
from gatekeeper.events.sinks.email import EmailOptions, EmailSink
from gatekeeper.events.sinks.webhooks import WebhookSink
from gatekeeper.events.spikes import SpikeDetector
from gatekeeper.events.subscriptions import SubscriptionStore
from gatekeeper.settings import from_environment

if TYPE_CHECKING:
    from gatekeeper.component import Context
    from gatekeeper.endpoints import Endpoint
    from gatekeeper.settings import Settings

__all__ = ["DRAIN_SECONDS", "EventsComponent", "create_component", "email_options", "preflight"]

DRAIN_SECONDS = 5.0

_log = structlog.get_logger("gatekeeper.events")


def email_options(settings: EventSettings) -> EmailOptions:
    """The email sink's options from the ``GATEKEEPER_SMTP_*``/``EMAIL_*`` settings."""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return EmailOptions(
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username or None,
        password=password,
        sender=settings.email_from,
        to=tuple(settings.alert_email_to),
        recipients={k: tuple(v) for k, v in settings.email_recipients.items()},
        starttls=settings.smtp_use_tls,
        implicit_tls=settings.smtp_use_ssl,
        timeout=settings.smtp_timeout_seconds,
        cooldown=settings.email_event_cooldown_seconds,
    )


class EventsComponent:
    """Emitter, outbox, sinks, delivery; ``/admin/webhooks`` and ``/admin/events/*``."""

    name = "events"

    def __init__(self, context: Context, settings: EventSettings | None = None) -> None:
        self.context = context
        self.settings = settings or from_environment(EventSettings)
        s = self.settings
        self.outbox: Outbox = (
            RedisOutbox(context.redis, prefix=s.events_redis_prefix)
            if context.redis is not None
            else MemoryOutbox(group=None)  # (read through each sink's group)
        )
        self.emitter = BufferedEmitter(self.outbox, capacity=s.events_buffer_size)
        self.subscriptions = (
            SubscriptionStore(context.database, context.clock)
            if context.database is not None
            else None
        )
        sinks: list[Sink] = []
        if self.subscriptions is not None:
            sinks.append(
                WebhookSink(self.subscriptions.active, timeout=s.events_webhook_timeout_seconds)
            )
        if s.email_notifications_enabled:
            sinks.append(EmailSink(email_options(s), clock=context.clock))
        if s.events_broker_url:
            sinks.append(
                broker_from_url(s.events_broker_url, timeout=s.events_broker_timeout_seconds)
            )
        self.sinks = sinks
        options = DeliveryOptions(
            batch=s.events_batch_size,
            max_attempts=s.events_max_attempts,
            backoff_base=s.events_retry_base_seconds,
            backoff_max=s.events_retry_max_seconds,
            lease_seconds=s.events_lease_seconds,
        )
        # One delivery loop per sink, each on its own consumer group and lease: a sink that
        # is down or slow holds back no other.
        self.deliverers = [
            Deliverer(self.outbox.group(sink.name), [sink], options) for sink in sinks
        ]
        self._stop = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        if s.events_enabled:
            context.events = self.emitter
            # The gateway's accounting counts 429s into it (app.py reads the extra).
            context.ratelimit_spikes = SpikeDetector(
                self.emitter,
                context.clock,
                threshold=s.ratelimit_spike_threshold,
                window=s.ratelimit_spike_window_seconds,
                cooldown=s.ratelimit_spike_cooldown_seconds,
            )

    def status(self) -> dict[str, Any]:
        """This replica's side of the delivery status (the admin view)."""
        deliverers = self.deliverers
        return {
            "buffered": len(self.emitter),
            "dropped": self.emitter.dropped,
            "leader": any(d.leader for d in deliverers),
            "delivered": sum(d.delivered for d in deliverers),
            "dead_lettered": sum(d.dead for d in deliverers),
            "sinks": [sink.name for sink in self.sinks],
        }

    def endpoints(self) -> list[Endpoint]:
        context = self.context
        audit = None
        if context.database is not None:
            from gatekeeper.identity.audit import AuditLog

            audit = AuditLog(context.database, context.clock).record
        return events_admin_endpoints(
            self.emitter,
            self.outbox,
            self.status,
            self.subscriptions,
            guard=context.users_guard or context.admin_guard,
            audit=audit,
        )

    async def start(self) -> None:
        """Connect the limiter's breaker, create the sinks' groups, start the flusher and one
        delivery loop per sink."""
        breaker = getattr(self.context.limiter, "breaker", None)
        if breaker is not None and self.settings.events_enabled:
            breaker.events = self.emitter  # limiter.degraded / limiter.recovered
        for deliverer in self.deliverers:
            try:
                await deliverer.outbox.prepare()
            except GatekeeperError as exc:  # (Redis down: the group is created on first read)
                _log.warning("events_group_not_created", error=str(exc))
        self._stop.clear()
        self._flusher = asyncio.create_task(self._flush_loop(), name="events-flusher")
        self._tasks = [
            asyncio.create_task(d.run(self._stop), name=f"events-delivery-{sink.name}")
            for d, sink in zip(self.deliverers, self.sinks, strict=True)
        ]

    async def _flush_loop(self) -> None:
        interval = self.settings.events_flush_interval_seconds
        while not self._stop.is_set():
            try:
                await self.emitter.flush()
            except Exception:  # a bug here must not stop every later event from flowing
                _log.exception("events_flush_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    async def stop(self) -> None:
        """Flush, stop delivering (in the embedded mode, drain first), close the sinks."""
        for deliverer in self.deliverers:
            deliverer.stop_soon()
        self._stop.set()
        if self._flusher is not None:
            await self._flusher
            self._flusher = None
        await self.emitter.flush()
        await asyncio.gather(
            *(self._finish(d, task) for d, task in zip(self.deliverers, self._tasks, strict=True))
        )
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.aclose()
        self._tasks = []

    async def _finish(self, deliverer: Deliverer, task: asyncio.Task[None]) -> None:
        """Let one delivery loop end; in the embedded mode, deliver what its group holds (it
        dies with the process), for at most ``DRAIN_SECONDS`` each."""
        try:
            await asyncio.wait_for(task, DRAIN_SECONDS)
        except TimeoutError:
            # (A sink that hangs: draining would hang as well.)
            _log.warning("events_delivery_stopped_mid_batch", sink=deliverer.sinks[0].name)
            return
        if not isinstance(self.outbox, MemoryOutbox):
            return  # (Redis keeps the rest for the next leader)
        deadline = time.monotonic() + DRAIN_SECONDS
        deliverer._stopping = False
        outbox = deliverer.outbox
        try:
            while await outbox.backlog() and time.monotonic() < deadline:
                remaining = max(0.01, deadline - time.monotonic())
                await asyncio.wait_for(deliverer.run_once(wait=0), remaining)
        except (TimeoutError, GatekeeperError) as exc:
            _log.warning("events_lost_at_stop", sink=deliverer.sinks[0].name, error=str(exc))


def preflight(settings: Settings) -> None:
    """What the factory would refuse (``gatekeeper.preflight``): the events' settings and the
    broker URL's scheme."""
    events = from_environment(EventSettings)
    if events.events_broker_url:
        broker_from_url(events.events_broker_url)


def create_component(context: Context) -> EventsComponent:
    """The factory named in ``gatekeeper.app.COMPONENT_FACTORIES``."""
    return EventsComponent(context)
