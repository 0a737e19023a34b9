"""The waiting room's state in this process: the embedded mode (no Redis).

It mirrors ``lua/*.lua`` step by step (the contract tests hold both to the same behaviour); see
:mod:`gatekeeper.waitingroom.store` for the model. Every method runs without awaiting in the
middle, which makes each one atomic on the event loop just as a script is atomic in Redis.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

from gatekeeper.waitingroom.redis_store import SWEEP_BUDGET
from gatekeeper.waitingroom.store import (
    AdmitResult,
    EnqueueResult,
    QueueStats,
    TicketState,
    TicketStatus,
)

__all__ = ["MemoryStore"]


@dataclass
class _Tenant:
    seq: int = 0
    head: int = 0
    records: dict[int, str] = field(default_factory=dict)  # ticket -> user
    users: dict[str, int] = field(default_factory=dict)  # user -> ticket
    gone: list[int] = field(default_factory=list)  # sorted
    ready: dict[int, float] = field(default_factory=dict)  # ticket -> ready until
    live: dict[int, set[int]] = field(default_factory=dict)  # epoch -> tickets
    next_tick: float | None = None
    history: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=20))
    sweep: tuple[int, int] = (-1, 0)

    def forget(self, ticket: int, user: str) -> None:
        self.records.pop(ticket, None)
        if self.users.get(user) == ticket:
            del self.users[user]

    def touch(self, ticket: int, epoch: int) -> None:
        for e in (epoch, epoch + 1):
            self.live.setdefault(e, set()).add(ticket)
        # Epochs before the previous one can never be read again.
        for e in [e for e in self.live if e < epoch - 1]:
            del self.live[e]

    def alive(self, ticket: int, epoch: int) -> bool:
        return ticket in self.live.get(epoch, ())

    def position(self, ticket: int) -> int:
        ahead_gone = bisect.bisect_left(self.gone, ticket) - bisect.bisect_right(
            self.gone, self.head
        )
        return ticket - self.head - ahead_gone

    def ready_until(self, ticket: int, now: float) -> float | None:
        until = self.ready.get(ticket)
        return until if until is not None and until > now else None


class MemoryStore:
    """:class:`~gatekeeper.waitingroom.store.WaitingRoomStore` in process memory."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}
        self._leases: dict[str, tuple[str, float]] = {}

    def _t(self, tenant: str) -> _Tenant:
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant()
        return state

    async def enqueue(self, tenant: str, user: str, now: float, grace: int) -> EnqueueResult:
        q = self._t(tenant)
        ticket = q.users.get(user, 0)
        dup, state = False, TicketState.QUEUED
        if ticket:
            if q.records.get(ticket) != user:
                ticket = 0
            elif ticket <= q.head:
                if q.ready_until(ticket, now) is not None:
                    dup, state = True, TicketState.READY
                else:
                    q.forget(ticket, user)
                    ticket = 0
            else:
                dup = True
        if not ticket:
            q.seq += 1
            ticket = q.seq
            q.users[user] = ticket
            q.records[ticket] = user
        position = None
        if state is TicketState.QUEUED:
            q.touch(ticket, int(now // grace))
            position = q.position(ticket)
        return EnqueueResult(ticket, state, position, dup)

    def _status(self, tenant: str, ticket: int, user: str, now: float, grace: int) -> TicketStatus:
        q = self._t(tenant)
        if q.records.get(ticket) != user:
            return TicketStatus(TicketState.GONE)
        if ticket <= q.head:
            until = q.ready_until(ticket, now)
            if until is None:
                return TicketStatus(TicketState.GONE)
            return TicketStatus(TicketState.READY, ready_until=until)
        if grace:
            q.touch(ticket, int(now // grace))
        return TicketStatus(TicketState.QUEUED, position=q.position(ticket))

    async def status(
        self, tenant: str, ticket: int, user: str, now: float, grace: int
    ) -> TicketStatus:
        return self._status(tenant, ticket, user, now, grace)

    async def verify(self, tenant: str, ticket: int, user: str, now: float) -> bool:
        return self._status(tenant, ticket, user, now, 0).state is TicketState.READY

    async def finish(self, tenant: str, ticket: int, user: str, now: float) -> bool:
        q = self._t(tenant)
        if q.records.get(ticket) != user or ticket > q.head:
            return False
        was_ready = q.ready_until(ticket, now) is not None
        q.ready.pop(ticket, None)
        q.forget(ticket, user)
        return was_ready

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
        q = self._t(tenant)
        epoch = int(now // grace)
        ticks = admitted = skipped = expired = abandoned = 0
        nxt = now if q.next_tick is None else q.next_tick
        if now >= nxt:
            due = int((now - nxt) // frequency) + 1
            ticks = min(due, max_catch_up)
            nxt += due * frequency
            q.next_tick = nxt
            want = ticks * limit
            scan_cap = want + 100_000
            t = q.head
            while want > 0 and t < q.seq and scan_cap > 0:
                t += 1
                scan_cap -= 1
                user = q.records.get(t)
                if user is None:
                    skipped += 1
                elif q.alive(t, epoch):
                    q.ready[t] = now + ready_ttl
                    admitted += 1
                    want -= 1
                else:
                    q.forget(t, user)
                    skipped += 1
                    abandoned += 1
            q.head = t
            del q.gone[: bisect.bisect_right(q.gone, q.head)]
            q.history.append((now, admitted))
        for t, until in sorted(q.ready.items()):
            if until <= now:
                user = q.records.get(t)
                if user is not None:
                    q.forget(t, user)
                del q.ready[t]
                expired += 1
        abandoned += self._sweep(q, epoch)
        return AdmitResult(ticks, admitted, skipped, expired, abandoned, q.head, nxt)

    def _sweep(self, q: _Tenant, epoch: int) -> int:
        # Same walk as admit.lua step 4, one candidate per budget unit.
        cur_epoch, pos = q.sweep
        pos = max(q.head, pos) if cur_epoch == epoch else q.head
        budget, abandoned = SWEEP_BUDGET, 0
        live = q.live.get(epoch, set())
        while pos < q.seq and budget > 0:
            budget -= 1
            t = pos + 1
            while t <= q.seq and t in live:
                t += 1
            if t > q.seq:
                pos = q.seq
                break
            user = q.records.get(t)
            if user is not None:
                q.forget(t, user)
                bisect.insort(q.gone, t)
                abandoned += 1
            pos = t
        q.sweep = (epoch, pos)
        return abandoned

    async def stats(self, tenant: str, now: float) -> QueueStats:
        q = self._t(tenant)
        return QueueStats(
            queued=max(0, q.seq - q.head - len(q.gone)),
            ready=sum(1 for until in q.ready.values() if until > now),
            head=q.head,
            last_ticket=q.seq,
            next_tick=q.next_tick,
            history=tuple(q.history),
        )

    async def acquire_lease(self, name: str, owner: str, ttl: float, now: float) -> bool:
        holder = self._leases.get(name)
        if holder is None or holder[1] <= now or holder[0] == owner:
            self._leases[name] = (owner, now + ttl)
            return True
        return False

    async def release_lease(self, name: str, owner: str) -> None:
        if self._leases.get(name, ("", 0.0))[0] == owner:
            del self._leases[name]

    async def aclose(self) -> None:
        return None
