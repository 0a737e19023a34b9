"""Events: what Gatekeeper tells operators, delivered at least once to webhooks, email and a
broker.

The request path only calls :meth:`BufferedEmitter.emit` (through ``context.events``, typed
``gatekeeper.types.EventEmitter``); everything else (the durable outbox, the one delivering
leader, retries and dead letters, the sinks) runs beside it. See ``docs/events.md``.
"""

from __future__ import annotations

from gatekeeper.events.delivery import Deliverer, DeliveryOptions
from gatekeeper.events.emitter import BufferedEmitter
from gatekeeper.events.model import EVENT_TYPES, Event, EventType
from gatekeeper.events.outbox import MemoryOutbox, Outbox
from gatekeeper.events.redis_outbox import RedisOutbox

__all__ = [  # noqa: RUF022 (plainly sorted: a test keeps it so)
    "BufferedEmitter",
    "Deliverer",
    "DeliveryOptions",
    "EVENT_TYPES",
    "Event",
    "EventType",
    "MemoryOutbox",
    "Outbox",
    "RedisOutbox",
]
