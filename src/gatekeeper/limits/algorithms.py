"""The counting algorithms, in exact integer arithmetic (the reference for the Lua scripts).

Every function here has a twin in ``limits/storage/lua/decide.lua``; the contract tests compare
the two decision by decision. Times are integer microseconds; token amounts are scaled by the
period (one token = ``period_us`` units) so that refills of ``limit`` per ``period`` are a whole
``limit`` units per microsecond and nothing is ever rounded. Every intermediate value stays
below 2**53 (``Policy`` guarantees ``capacity * period_us < 2**53``), so Lua's doubles compute
exactly the same integers as Python.

Each step function takes the key's state (``None`` when absent), ``now`` and the check's
parameters and returns an :data:`Outcome`: ``(allowed, remaining, reset_us, retry_us, state)``
where ``state`` is the new state to store, or ``None`` when nothing must be written (a peek, a
denial or a cost of 0). ``reset_us`` is the time until the state is fully reset (the key's TTL);
``retry_us`` the exact earliest time at which a retry of the same cost would be admitted if
nothing else happened (0 when allowed). A cost above the capacity can never be admitted: its
``retry_us`` is ``reset_us`` (the best the store can say).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from typing import Any, NamedTuple

from gatekeeper.limits.policy import Algorithm

__all__ = [
    "ALGORITHM_CODES",
    "LogAppend",
    "Outcome",
    "concurrency",
    "fixed_window",
    "gcra",
    "lease_members",
    "sliding_log",
    "sliding_window",
    "token_bucket",
]

#: The small integers the Lua script uses for each algorithm.
ALGORITHM_CODES: dict[Algorithm, int] = {
    Algorithm.TOKEN_BUCKET: 1,
    Algorithm.GCRA: 2,
    Algorithm.FIXED_WINDOW: 3,
    Algorithm.SLIDING_WINDOW: 4,
    Algorithm.SLIDING_LOG: 5,
    Algorithm.CONCURRENCY: 6,
}

Outcome = tuple[bool, int, int, int, Any]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _bucket(deficit: int, limit: int, period: int, capacity: int, cost: int) -> Outcome:
    """The common core of token bucket and GCRA, on the bucket's deficit (scaled units).

    Bound: over any interval of ``d`` microseconds, at most ``capacity + limit * d / period``
    tokens are admitted.
    """
    full = capacity * period
    need = cost * period
    if cost <= capacity and deficit + need <= full:
        after = deficit + need
        reset = _ceil_div(after, limit)
        return True, (full - after) // period, reset, 0, (after if cost else None)
    reset = _ceil_div(deficit, limit)
    remaining = (full - deficit) // period if deficit < full else 0
    retry = reset if cost > capacity else _ceil_div(deficit + need - full, limit)
    return False, remaining, reset, retry, None


def token_bucket(
    state: tuple[int, int] | None, now: int, limit: int, period: int, capacity: int, cost: int
) -> Outcome:
    """Token bucket; state ``(tokens in scaled units, last update)``; refills ``limit`` per
    ``period`` up to ``capacity`` tokens."""
    if state is None:
        deficit = 0
    else:
        tokens, last = state
        deficit = capacity * period - tokens
        if now > last and deficit > 0:
            # Compare elapsed time rather than multiply it: a long idle gap times the rate
            # could leave the exact range.
            if now - last >= _ceil_div(deficit, limit):
                deficit = 0
            else:
                deficit -= (now - last) * limit
        if now < last:
            now = last  # the clock went back: refill nothing and keep the later stamp
    allowed, remaining, reset, retry, after = _bucket(deficit, limit, period, capacity, cost)
    new = None if after is None else (capacity * period - after, now)
    return allowed, remaining, reset, retry, new


def gcra(
    state: tuple[int, int] | None, now: int, limit: int, period: int, capacity: int, cost: int
) -> Outcome:
    """GCRA; state is the theoretical arrival time as ``(whole us, remainder in 1/limit us)``.

    Equivalent to the token bucket decision by decision (the deficit is ``tat - now``); it
    only stores one timestamp.
    """
    deficit = 0
    if state is not None:
        tat, frac = state
        if tat >= now:
            deficit = (tat - now) * limit + frac
    allowed, remaining, reset, retry, after = _bucket(deficit, limit, period, capacity, cost)
    new = None if after is None else (now + after // limit, after % limit)
    return allowed, remaining, reset, retry, new


def fixed_window(
    state: tuple[int, int] | None, now: int, limit: int, period: int, cost: int
) -> Outcome:
    """Fixed window aligned to multiples of ``period``; state ``(count, window start)``.

    Bound: at most ``limit`` admitted within each aligned window (so up to ``2 * limit`` in a
    period-long interval straddling a boundary).
    """
    start = now - now % period
    count = state[0] if state is not None and state[1] == start else 0
    end = start + period - now
    if count + cost <= limit:
        count += cost
        return True, limit - count, (end if count else 0), 0, ((count, start) if cost else None)
    reset = end if count else 0
    return False, limit - count, reset, (reset if cost > limit else end), None


def sliding_window(
    state: tuple[int, int, int] | None, now: int, limit: int, period: int, cost: int
) -> Outcome:
    """Sliding-window counter; state ``(previous count, current count, current start)``.

    The estimate is ``floor(previous * (period - elapsed) / period) + current``. The previous
    window's share is rounded down, as the ``limits`` library does: unrounded, the last slot of
    a window is never free while the previous window was full, so a key kept busy converges to
    ``limit - 1`` per window (4 a second where 5 are configured). Bound: at most ``limit``
    admitted in each aligned window, and at most ``2 * limit`` in any period-long interval.
    """
    start = now - now % period
    elapsed = now - start
    prev = cur = 0
    if state is not None:
        if state[2] == start:
            prev, cur = state[0], state[1]
        elif state[2] == start - period:
            prev = state[1]
    used = prev * (period - elapsed) // period  # the previous window's share, rounded down
    if cur + cost + used <= limit:
        cur += cost
        allowed = True
    else:
        allowed = False
    remaining = max(limit - cur - used, 0)
    if cur:
        reset = start + 2 * period - now
    elif prev:
        reset = start + period - now
    else:
        reset = 0
    if allowed:
        return True, remaining, reset, 0, ((prev, cur, start) if cost else None)
    if cost > limit:
        return False, remaining, reset, reset, None
    free = limit - cur - cost
    if free >= 0 and prev:
        # Later in this window: the first elapsed time at which the previous window's share
        # rounds down to ``free`` (prev * (period - e) < (free + 1) * period).
        at = period - _ceil_div((free + 1) * period, prev) + 1
        if at < period:
            return False, remaining, reset, start + at - now, None
    # In the next window the current count becomes the weighted one.
    wait = 0 if cur == 0 else period - _ceil_div((limit - cost + 1) * period, cur) + 1
    wait = max(wait, 0)
    retry = start + period + wait - now if wait < period else start + 2 * period - now
    return False, remaining, reset, retry, None


class LogAppend(NamedTuple):
    """A sliding log's pending debit: ``cost`` entries at ``now`` to add to ``entries``.

    The log can hold up to ``limit`` entries, so a step does not copy it: it trims expired
    entries in place (which changes no decision) and describes the append, which the store
    applies only if the whole group is admitted.
    """

    entries: list[int]
    now: int
    cost: int

    def apply(self) -> list[int]:
        """Append the entries (in order, even if the clock went back) and return the log."""
        entries, now = self.entries, self.now
        if not entries or entries[-1] <= now:
            entries.extend([now] * self.cost)
        else:
            for _ in range(self.cost):
                insort(entries, now)
        return entries


def sliding_log(state: list[int] | None, now: int, limit: int, period: int, cost: int) -> Outcome:
    """Sliding log; state is the sorted list of admitted timestamps (cost c adds c entries).

    Exact bound: for every ``t``, at most ``limit`` entries lie in ``(t - period, t]``. The
    new state is a :class:`LogAppend` to apply.
    """
    entries = state if state is not None else []
    cut = bisect_right(entries, now - period)
    if cut:
        del entries[:cut]
    count = len(entries)
    last = entries[-1] if entries else None
    if count + cost <= limit:
        if cost:
            last = now if last is None or last < now else last
        count += cost
        reset = last + period - now if last is not None else 0
        return True, limit - count, reset, 0, (LogAppend(entries, now, cost) if cost else None)
    reset = last + period - now if last is not None else 0
    if cost > limit:
        return False, limit - count, reset, reset, None
    # The oldest (count - (limit - cost)) entries must leave the window first.
    return False, limit - count, reset, entries[count - limit + cost - 1] + period - now, None


def lease_members(lease_id: str, cost: int) -> list[str]:
    """The sorted-set members one concurrency check holds: one per unit of cost."""
    return [lease_id] + [f"{lease_id}#{i}" for i in range(2, cost + 1)]


def concurrency(
    state: dict[str, int] | None, now: int, limit: int, ttl: int, cost: int, lease_id: str
) -> Outcome:
    """Concurrency; state maps lease members to their expiry (now + ``ttl`` when taken).

    A check takes ``cost`` slots under ``lease_id`` (renewing those it already holds). Bound:
    at any moment at most ``limit`` unexpired, unreleased slots are held.
    """
    live = {m: x for m, x in state.items() if x > now} if state else {}
    members = lease_members(lease_id, cost) if cost else []
    needed = sum(1 for m in members if m not in live)
    count = len(live)
    if count + needed <= limit and cost <= limit:
        for m in members:
            live[m] = now + ttl
        count += needed
        reset = max(live.values()) - now if live else 0
        return True, limit - count, reset, 0, (live if cost else None)
    reset = max(live.values()) - now if live else 0
    if cost > limit:
        return False, limit - count, reset, reset, None
    expiries = sorted(live.values())
    return False, limit - count, reset, expiries[count + needed - limit - 1] - now, None
