"""The sink protocol and one delivery attempt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gatekeeper.events.model import Event

__all__ = ["Attempt", "Sink"]


@dataclass(slots=True)
class Attempt:
    """One event to one target of a sink (``"amqp"``, ``"email"``, ``"webhook:<id>"``)."""

    target: str
    event: Event
    # What the sink needs to send it (a webhook subscription, email recipients).
    detail: Any = None


class Sink(Protocol):
    """A destination of events."""

    name: str

    async def plan(self, events: Sequence[Event]) -> list[Attempt]:
        """The deliveries ``events`` need here (none for an event this sink does not want)."""
        ...

    async def send(self, attempts: Sequence[Attempt]) -> list[BaseException | None]:
        """Try each attempt once; ``None`` where it was delivered, else the error. Never
        raises for a failed delivery, and gives up within its own timeout."""
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...
