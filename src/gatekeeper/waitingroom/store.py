"""The queue's state and the operations on it, whatever holds it.

Two implementations keep exactly the same behaviour (``tests/contract/test_waitingroom_store``
runs one list of assertions on both): :class:`~gatekeeper.waitingroom.redis_store.RedisStore`
(shared by replicas, atomic Lua) and :class:`~gatekeeper.waitingroom.memory_store.MemoryStore`
(embedded mode).

The model, per tenant, is a handful of counters rather than a list:

* ``seq``: the last ticket handed out (tickets are 1, 2, 3, ... in enqueue order);
* ``head``: every ticket ``<= head`` has been dealt with (admitted or skipped);
* ``gone``: the tickets above ``head`` whose holders abandoned (stopped polling for longer than
  the grace period) or otherwise left, in a sorted set;
* a record per live ticket (its user) and a map user -> ticket to refuse a second place in line.

So a position is ``1 + live tickets between head and mine``
``= ticket - head - |gone in (head, ticket)|``: O(log n) at any queue length, and honest,
because nobody who left counts. Admission walks forward from ``head`` making ``limit`` live
tickets ready per tick and skipping the gone ones, so their slots are not wasted.

Liveness is tracked per *epoch* (``grace_seconds`` long): a touch in epoch ``e`` marks the
ticket alive in ``e`` and ``e + 1``; a ticket is alive in the current epoch if it is marked. A
ticket untouched for between one and two grace periods is therefore abandoned.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, Protocol

__all__ = [
    "USER_BUCKETS",
    "AdmitResult",
    "EnqueueResult",
    "QueueStats",
    "TicketState",
    "TicketStatus",
    "WaitingRoomStore",
    "user_bucket",
]

# Users are spread over this many small hashes so that each stays in Redis' compact listpack
# encoding (<= 128 fields) up to ~4M queued users per tenant.
USER_BUCKETS = 32_768


def user_bucket(user: str) -> int:
    """The user map bucket of ``user`` (stable across processes and languages)."""
    return zlib.crc32(user.encode()) % USER_BUCKETS


class TicketState(IntEnum):
    """Where a ticket stands."""

    QUEUED = 0
    READY = 1
    GONE = 2
    """Finished, expired, abandoned or unknown: the holder must enqueue again."""


class EnqueueResult(NamedTuple):
    """``duplicate`` is true when the user already held a live ticket (returned as is)."""

    ticket: int
    state: TicketState
    position: int | None
    duplicate: bool


class TicketStatus(NamedTuple):
    """``position`` for queued tickets; ``ready_until`` (epoch seconds) for ready ones."""

    state: TicketState
    position: int | None = None
    ready_until: float | None = None


@dataclass(frozen=True, slots=True)
class AdmitResult:
    """What one call of the admission step did.

    ``ticks`` is how many scheduled ticks it performed (0: not due yet; >1: it caught up with
    ticks a dead worker missed). ``next_tick`` is when the next one is due.
    """

    ticks: int
    admitted: int
    skipped: int
    expired: int
    abandoned: int
    head: int
    next_tick: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counters for ETAs and metrics. ``history``: (tick time, admitted) of recent ticks."""

    queued: int
    ready: int
    head: int
    last_ticket: int
    next_tick: float | None
    history: tuple[tuple[float, int], ...]


class WaitingRoomStore(Protocol):
    """Atomic queue operations. ``now`` is epoch seconds from the caller's clock; ``grace`` the
    abandonment period in seconds (must be the same on every replica).

    ``enqueue`` and ``status`` return an awaitable (a coroutine, or a future of a batch) so
    that the hot path needs no coroutine of its own."""

    def enqueue(self, tenant: str, user: str, now: float, grace: int) -> Awaitable[EnqueueResult]:
        """Give ``user`` the next ticket, or return the live ticket they already hold."""
        ...

    def status(
        self, tenant: str, ticket: int, user: str, now: float, grace: int
    ) -> Awaitable[TicketStatus]:
        """Where ``ticket`` (held by ``user``) stands; a queued ticket is marked alive."""
        ...

    async def verify(self, tenant: str, ticket: int, user: str, now: float) -> bool:
        """True while ``ticket`` is ready (admitted, not finished, not past its ready TTL)."""
        ...

    async def finish(self, tenant: str, ticket: int, user: str, now: float) -> bool:
        """End a ready session (True), or do nothing for a ticket that is not ready (False)."""
        ...

    async def admit(
        self,
        tenant: str,
        *,
        limit: int,
        frequency: int,
        ready_ttl: int,
        now: float,
        grace: int,
        max_catch_up: int = 3,
    ) -> AdmitResult:
        """Perform the tenant's due admission ticks (none if not due) and expire ready sessions.

        The schedule lives in the store, so two workers calling this concurrently can neither
        double a tick nor lose one; a worker that takes over performs the ticks the dead one
        missed (at most ``max_catch_up`` at once, so an outage does not become a stampede).
        Also marks a bounded number of abandoned tickets ahead, so positions stay honest.
        """
        ...

    async def stats(self, tenant: str, now: float) -> QueueStats: ...

    async def acquire_lease(self, name: str, owner: str, ttl: float, now: float) -> bool:
        """Take or renew the lease ``name`` for ``owner``; False if someone else holds it."""
        ...

    async def release_lease(self, name: str, owner: str) -> None: ...

    async def aclose(self) -> None: ...
