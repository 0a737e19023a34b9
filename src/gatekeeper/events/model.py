"""The event model: one CloudEvents 1.0 JSON envelope for everything Gatekeeper reports.

An :class:`Event` is built off the request path (by the emitter's flusher) from what a part of
Gatekeeper emitted: ``type`` without the ``gatekeeper.`` prefix (``"key.banned"``), a JSON-able
``data`` and an optional ``subject``. Its envelope::

    {"specversion": "1.0", "id": "<uuid4: the idempotency id>", "source": "gatekeeper/<replica>",
     "type": "gatekeeper.key.banned", "time": "2026-12-06T09:00:00.000000Z",
     "subject": "key:k_123", "datacontenttype": "application/json",
     "dataschema": "urn:gatekeeper:event:key.banned:v1", "data": {...}}

The ``id`` is assigned once, when the event enters the outbox, and travels with every retry and
every sink (the ``webhook-id`` header, the AMQP ``message_id``, the NATS ``Nats-Msg-Id``), so a
consumer drops duplicates of at-least-once delivery by it. The version of ``data``'s shape is in
``dataschema``; a breaking change to a type's data gets a new version there, never a new type.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gatekeeper.errors import InvalidInput

__all__ = [
    "EVENT_TYPES",
    "PREFIX",
    "SPECVERSION",
    "Event",
    "EventType",
    "addressed_to",
    "check_patterns",
    "matches",
    "wanted_by",
]

SPECVERSION = "1.0"
PREFIX = "gatekeeper."


@dataclass(frozen=True, slots=True)
class EventType:
    """One kind of event: its name, the version of its data and what its data holds."""

    name: str
    description: str
    fields: tuple[str, ...]
    version: int = 1

    @property
    def dataschema(self) -> str:
        return f"urn:gatekeeper:event:{self.name}:v{self.version}"


def _types(*entries: EventType) -> dict[str, EventType]:
    return {e.name: e for e in entries}


EVENT_TYPES: dict[str, EventType] = _types(
    EventType("tier.changed", "A user moved to another tier.", ("user_id", "old", "new", "actor")),
    EventType("key.blocked", "An admin blocked an API key.", ("key_id", "prefix", "actor")),
    EventType("key.unblocked", "An admin unblocked an API key.", ("key_id", "prefix", "actor")),
    EventType("key.banned", "A key was banned after repeated violations.", ("key_id", "seconds")),
    EventType("key.unbanned", "A key's ban was lifted.", ("key_id", "actor")),
    EventType("ip.banned", "An address was banned after repeated violations.", ("ip", "seconds")),
    EventType("ip.unbanned", "An address's ban was lifted.", ("ip", "actor")),
    EventType("abuse.detected", "A client matched an abuse pattern.", ("pattern", "client")),
    EventType(
        "ratelimit.spike",
        "A key or route answered more 429s than the configured rate.",
        ("scope", "name", "count", "window_seconds"),
    ),
    EventType(
        "upstream.down", "An upstream endpoint failed its health checks.", ("pool", "endpoint")
    ),
    EventType(
        "upstream.up", "An upstream endpoint passed its health checks again.", ("pool", "endpoint")
    ),
    EventType("breaker.opened", "An endpoint's circuit breaker opened.", ("pool", "endpoint")),
    EventType(
        "breaker.closed", "An endpoint's circuit breaker closed again.", ("pool", "endpoint")
    ),
    EventType(
        "waitingroom.queueing", "A waiting room started queueing users.", ("tenant", "queued")
    ),
    EventType("waitingroom.drained", "A waiting room's queue is empty again.", ("tenant",)),
    EventType(
        "limiter.degraded", "The limit store failed; the limiter runs degraded.", ("reason",)
    ),
    EventType("limiter.recovered", "The limit store answers again.", ()),
    EventType("test", "A test event sent from the admin API.", ("message", "to")),
)


def addressed_to(event: Event) -> str | None:
    """The one target a test event is for (``"webhook:<id>"``, ``"email"``, ``"amqp"``,
    ``"nats"``), from its data's ``to``; ``None`` for every other event (all targets)."""
    if event.type != "test":
        return None
    to = event.data.get("to")
    return str(to) if to is not None else None


def wanted_by(target: str, event: Event) -> bool:
    """Whether ``target`` may receive ``event`` (a test event only goes where it is sent)."""
    to = addressed_to(event)
    return to is None or to == target


def matches(patterns: tuple[str, ...], name: str) -> bool:
    """Whether event type ``name`` matches one of ``patterns`` (``"*"``, ``"key.*"``, exact)."""
    for pattern in patterns:
        if pattern == "*" or pattern == name:
            return True
        if pattern.endswith(".*") and name.startswith(pattern[:-1]):
            return True
    return False


def check_patterns(patterns: list[str]) -> tuple[str, ...]:
    """Validated event type filters; an unknown type or family is refused (InvalidInput)."""
    families = {name.split(".")[0] for name in EVENT_TYPES}
    for pattern in patterns:
        if pattern == "*" or pattern in EVENT_TYPES:
            continue
        if pattern.endswith(".*") and pattern[:-2] in families:
            continue
        known = ", ".join(sorted(EVENT_TYPES))
        raise InvalidInput(f"unknown event type {pattern!r}: one of {known}, a family.*, or *")
    return tuple(patterns)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Event:
    """One event, as delivered. ``type`` is the short name (``"key.banned"``)."""

    type: str
    data: dict[str, Any]
    time: float
    source: str
    subject: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def full_type(self) -> str:
        return PREFIX + self.type

    def envelope(self) -> dict[str, Any]:
        """The CloudEvents 1.0 structured-mode JSON object."""
        known = EVENT_TYPES.get(self.type)
        body: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.full_type,
            "time": _rfc3339(self.time),
            "datacontenttype": "application/json",
            "dataschema": (known.dataschema if known else f"urn:gatekeeper:event:{self.type}:v1"),
            "data": self.data,
        }
        if self.subject is not None:
            body["subject"] = self.subject
        return body

    def to_json(self) -> bytes:
        return json.dumps(self.envelope(), separators=(",", ":"), default=str).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        """The event an envelope describes (what the outbox stores)."""
        body = json.loads(raw)
        full = str(body["type"])
        stamp = datetime.strptime(body["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return cls(
            type=full.removeprefix(PREFIX),
            data=dict(body.get("data") or {}),
            time=stamp.timestamp(),
            source=str(body["source"]),
            subject=body.get("subject"),
            id=str(body["id"]),
        )
