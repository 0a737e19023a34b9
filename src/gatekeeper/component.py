"""How the parts of Gatekeeper plug into one process.

The composition root (``gatekeeper.app``) opens the shared resources once, in the lifespan, and
hands them to every component as a :class:`Context`. A component (waiting room, identity, admin,
dashboard, ...) contributes HTTP routes and may run background tasks between ``start`` and
``stop``. Components never open their own Redis pool or database engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fastapi import APIRouter
    from redis.asyncio import Redis

    from gatekeeper.settings import Settings
    from gatekeeper.types import Clock

__all__ = ["Component", "Context"]


@dataclass
class Context:
    """Resources shared by every component of one process.

    ``redis`` is ``None`` in the embedded mode (no ``GATEKEEPER_REDIS_URL``); components then use
    their in-process implementation. ``limiter`` is a ``gatekeeper.limits.Limiter``;
    ``database`` a ``gatekeeper.persistence.Database`` (typed ``Any`` here so that this module
    imports nothing heavy). ``extras`` lets components publish objects to each other by name.
    """

    settings: Settings
    clock: Clock
    redis: Redis | None = None
    limiter: Any = None
    database: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


class Component(Protocol):
    """A part of the service: routes plus a lifetime."""

    name: str

    def router(self) -> APIRouter | None:
        """Routes to mount on the built-in API (``None`` for a component without HTTP)."""
        ...

    async def start(self) -> None:
        """Open what the component needs and start its background tasks."""
        ...

    async def stop(self) -> None:
        """Stop background tasks and let in-flight work finish."""
        ...
