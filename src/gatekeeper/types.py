"""The protocols that tie Gatekeeper's parts together.

Implementations live with their concept (``limits.storage.memory``, ``gateway.balancing``, ...);
only the shapes are here, so that any part can depend on a shape without importing a sibling.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from gatekeeper.limits.decision import PolicyResult
    from gatekeeper.limits.policy import Check

__all__ = ["Clock", "EventEmitter", "MonotonicClock", "Storage", "SystemClock", "WarmUp"]


@runtime_checkable
class Clock(Protocol):
    """A source of time. Tests inject :class:`gatekeeper.testing.FakeClock`."""

    def now(self) -> float:
        """Wall-clock time in seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences are meaningful."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


MonotonicClock = SystemClock


class Storage(Protocol):
    """Where limit state lives: decides groups of checks atomically.

    ``decide`` takes a batch of *groups*; each group is the list of checks of one request and is
    all-or-nothing: if any check of a group denies, no check of that group is debited. Groups are
    independent of each other. ``now_us`` overrides the store's own clock (Redis ``TIME``) and
    exists for tests; production code passes ``None``.
    """

    async def decide(
        self, groups: Sequence[Sequence[Check]], now_us: int | None = None
    ) -> list[list[PolicyResult]]: ...

    async def release(self, checks: Sequence[Check], lease_id: str) -> None:
        """Give back concurrency leases taken by ``decide`` under ``lease_id``."""
        ...

    async def reset(self, checks: Sequence[Check]) -> None:
        """Forget the state of the given keys (admin "reset this client")."""
        ...

    async def ping(self) -> None:
        """Raise :class:`~gatekeeper.errors.StorageError` unless the store answers."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class WarmUp(Protocol):
    """A store that can open its connections and load its scripts ahead of traffic, so that
    no request's deadline is spent on them (the start-up calls it before ``/ready``)."""

    async def warm_up(self, connections: int = 4) -> None:
        """Open ``connections`` connections to every server that serves keys and load the
        scripts there. Raises :class:`~gatekeeper.errors.StorageError` on failure."""
        ...


class EventEmitter(Protocol):
    """Where a part of Gatekeeper reports something operators are told about (an event).

    ``type`` is the event's type without the ``gatekeeper.`` prefix (``"key.banned"``), ``data``
    its JSON-able payload, ``subject`` what it is about (a key id, an address, a pool). Emitting
    only appends to an in-process buffer: it never waits and never raises on the request path.
    """

    def emit(self, type: str, data: Mapping[str, Any], *, subject: str | None = None) -> None:
        """Record one event for delivery."""
        ...
