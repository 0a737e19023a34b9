"""The in-process store: exact, asyncio-safe, bounded, and fast.

``decide`` never awaits while it works, so one batch is atomic on the event loop, like one Lua
call on Redis. State lives in one dict keyed by ``(subject, policy name, algorithm)`` (so a
policy whose algorithm changes on a reload starts afresh); every entry carries
the time at which it is fully reset (its "TTL"). Expired entries are dropped by a sweep that
runs when the dict has doubled since the last sweep or ``sweep_interval`` seconds have passed,
so memory stays proportional to the keys that are live.

Besides the :class:`~gatekeeper.types.Storage` protocol it offers synchronous entry points for
code that is not on an event loop, or that wants the cheapest possible decision:
:meth:`MemoryStorage.decide_sync` (same contract as ``decide``) and :meth:`MemoryStorage.hit`
(one policy, one subject, a boolean answer: the fast path, >= 1M decisions/s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import monotonic, time_ns
from typing import Any

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits import algorithms as alg
from gatekeeper.limits.decision import PolicyResult, policy_result
from gatekeeper.limits.policy import Algorithm, Check, Policy
from gatekeeper.types import Clock, SystemClock

__all__ = ["MemoryStorage"]

_Key = tuple[str, str, Algorithm]
# (state, now, cost, lease_id) -> Outcome
_Step = Callable[[Any, int, int, "str | None"], alg.Outcome]


def _stepper(policy: Policy) -> _Step:
    """Bind one policy's parameters to its algorithm's step function."""
    limit, period, capacity = policy.rate.limit, policy.rate.period_us, policy.capacity
    algorithm = policy.algorithm
    if algorithm is Algorithm.TOKEN_BUCKET:
        return lambda s, now, cost, _l: alg.token_bucket(s, now, limit, period, capacity, cost)
    if algorithm is Algorithm.GCRA:
        return lambda s, now, cost, _l: alg.gcra(s, now, limit, period, capacity, cost)
    if algorithm is Algorithm.FIXED_WINDOW:
        return lambda s, now, cost, _l: alg.fixed_window(s, now, limit, period, cost)
    if algorithm is Algorithm.SLIDING_WINDOW:
        return lambda s, now, cost, _l: alg.sliding_window(s, now, limit, period, cost)
    if algorithm is Algorithm.SLIDING_LOG:
        return lambda s, now, cost, _l: alg.sliding_log(s, now, limit, period, cost)
    ttl = round(policy.lease_ttl * 1_000_000)

    def lease(s: Any, now: int, cost: int, lease_id: str | None) -> alg.Outcome:
        if lease_id is None:
            raise ConfigurationError(
                f"policy {policy.name!r} is a concurrency limit: its checks need a lease_id"
            )
        return alg.concurrency(s, now, limit, ttl, cost, lease_id)

    return lease


def validate_group(group: Sequence[Check]) -> None:
    """Reject what no store can decide: a concurrency check without a lease id, or the same
    policy and subject twice in one group (its all-or-nothing debit would be ambiguous)."""
    for check in group:
        if check.policy.algorithm is Algorithm.CONCURRENCY and not check.lease_id:
            raise ConfigurationError(
                f"policy {check.policy.name!r} is a concurrency limit: its checks need a lease_id"
            )
    if len(group) > 1 and len({(c.key, c.policy.name) for c in group}) < len(group):
        raise ConfigurationError("a group checks the same policy and subject twice")


class MemoryStorage:
    """An in-process :class:`~gatekeeper.types.Storage` (the embedded default, ``memory://``).

    ``clock`` supplies the time when ``now_us`` is not given; ``prefix`` is accepted for
    symmetry with the Redis store (one instance is one namespace anyway).
    """

    def __init__(
        self, *, clock: Clock | None = None, prefix: str = "gk", sweep_interval: float = 10.0
    ) -> None:
        self.prefix = prefix
        self._clock: Clock = clock or SystemClock()
        # key -> (state, expires_at_us)
        self._data: dict[_Key, tuple[Any, int]] = {}
        self._steppers: dict[int, tuple[Policy, _Step]] = {}
        self._hits: dict[int, tuple[Policy, Callable[[str, int, int | None], bool]]] = {}
        self._sweep_interval = sweep_interval
        self._next_sweep = self._clock.monotonic() + sweep_interval
        self._sweep_size = 1024
        self._latest = 0  # the latest time a decision used: what "expired" is measured against

    def _now(self) -> int:
        return round(self._clock.now() * 1_000_000)

    def _step(self, policy: Policy) -> _Step:
        # Policies are frozen dataclasses whose hash walks every field; cache by identity
        # instead and keep a reference so the id cannot be reused by another object.
        cached = self._steppers.get(id(policy))
        if cached is None or cached[0] is not policy:
            cached = (policy, _stepper(policy))
            self._steppers[id(policy)] = cached
        return cached[1]

    # -- the fast path ---------------------------------------------------------------------

    def hit(self, policy: Policy, key: str, cost: int = 1, now_us: int | None = None) -> bool:
        """Decide and debit one policy for one subject; ``True`` when admitted.

        No result object and no ``Check``: the cheapest decision short of :meth:`bind`.
        Concurrency policies need :meth:`decide_sync` (they need a lease id).
        """
        cached = self._hits.get(id(policy))
        if cached is None or cached[0] is not policy:
            cached = (policy, self.bind(policy))
            self._hits[id(policy)] = cached
        return cached[1](key, cost, now_us)

    def bind(self, policy: Policy) -> Callable[[str, int, int | None], bool]:
        """The fast path: a function ``(key, cost=1, now_us=None) -> admitted`` for one policy.

        Everything is resolved once, so a tight loop of calls runs at >= 1M decisions/s on
        one core for the bucket algorithms.
        """
        if policy.algorithm is Algorithm.CONCURRENCY:
            raise ConfigurationError(
                f"policy {policy.name!r} is a concurrency limit: use decide with a lease_id"
            )
        decide = self._hit_function(policy)
        data = self._data
        name, algorithm = policy.name, policy.algorithm
        clock_now = self._clock.now
        # The system clock in integer microseconds without a float round trip: the cheapest
        # way to read it; any other clock goes through its now().
        system = type(self._clock) is SystemClock

        def hit(key: str, cost: int = 1, now_us: int | None = None) -> bool:
            if now_us is not None:
                now = now_us
            elif system:
                now = time_ns() // 1000
            else:
                now = round(clock_now() * 1_000_000)
            allowed = decide(data, (key, name, algorithm), cost, now)
            if len(data) > self._sweep_size:
                self._maybe_sweep(now)
            return allowed

        return hit

    def _hit_function(self, policy: Policy) -> Callable[[dict[_Key, Any], _Key, int, int], bool]:
        """A closure deciding one hit of ``policy``: inlined for the bucket algorithms (the
        common case), the generic step otherwise."""
        limit, period, capacity = policy.rate.limit, policy.rate.period_us, policy.capacity
        full = capacity * period
        if policy.algorithm is Algorithm.TOKEN_BUCKET:

            def bucket(data: dict[_Key, Any], k: _Key, cost: int, now: int) -> bool:
                entry = data.get(k)
                deficit = 0
                if entry is not None:
                    tokens, last = entry[0]
                    deficit = full - tokens
                    if now > last:
                        gain = (now - last) * limit  # Python ints: exact at any size
                        deficit = deficit - gain if gain < deficit else 0
                    else:
                        now = last
                after = deficit + cost * period
                if after > full:
                    return False
                if cost:
                    data[k] = ((full - after, now), now - (-after // limit))
                return True

            return bucket
        if policy.algorithm is Algorithm.GCRA:

            def cell(data: dict[_Key, Any], k: _Key, cost: int, now: int) -> bool:
                entry = data.get(k)
                deficit = 0
                if entry is not None:
                    tat, frac = entry[0]
                    if tat >= now:
                        deficit = (tat - now) * limit + frac
                after = deficit + cost * period
                if after > full:
                    return False
                if cost:
                    data[k] = ((now + after // limit, after % limit), now - (-after // limit))
                return True

            return cell
        if policy.algorithm is Algorithm.FIXED_WINDOW:

            def window(data: dict[_Key, Any], k: _Key, cost: int, now: int) -> bool:
                start = now - now % period
                entry = data.get(k)
                count = entry[0][0] if entry is not None and entry[0][1] == start else 0
                if count + cost > limit:
                    return False
                if cost:
                    data[k] = ((count + cost, start), start + period)
                return True

            return window
        step = self._step(policy)

        def generic(data: dict[_Key, Any], k: _Key, cost: int, now: int) -> bool:
            entry = data.get(k)
            allowed, _, reset, _, new = step(None if entry is None else entry[0], now, cost, None)
            if new is not None:
                if type(new) is alg.LogAppend:
                    new = new.apply()
                data[k] = (new, now + reset)
            return allowed

        return generic

    # -- the contract ----------------------------------------------------------------------

    def decide_sync(
        self, groups: Sequence[Sequence[Check]], now_us: int | None = None
    ) -> list[list[PolicyResult]]:
        """The synchronous body of :meth:`decide` (same contract)."""
        now = self._now() if now_us is None else now_us
        if now > self._latest:
            self._latest = now
        data = self._data
        out: list[list[PolicyResult]] = []
        for group in groups:
            validate_group(group)
            results: list[PolicyResult] = []
            writes: list[tuple[_Key, Any, int]] = []
            denied = False
            for check in group:
                policy = check.policy
                k = (check.key, policy.name, policy.algorithm)
                entry = data.get(k)
                state = None if entry is None else entry[0]
                step = self._step(policy)
                cost = check.cost
                allowed, remaining, reset, retry, new = step(state, now, cost, check.lease_id)
                if check.peek and allowed and cost:
                    # A peek reports the state as it is, not as the debit would leave it.
                    allowed, remaining, reset, retry, _ = step(state, now, 0, check.lease_id)
                elif new is not None:
                    writes.append((k, new, now + reset))
                if not allowed and not policy.shadow:
                    denied = True
                results.append(
                    policy_result(
                        policy.name,
                        allowed,
                        policy.capacity,
                        remaining,
                        reset / 1_000_000,
                        retry / 1_000_000,
                        policy.shadow,
                    )
                )
            if denied:
                # Nothing of a denied group is debited, so what it reports is the state as is.
                results = [
                    r if not r.allowed else self._peek(c, now)
                    for r, c in zip(results, group, strict=True)
                ]
            else:
                for k, new, expires in writes:
                    if type(new) is alg.LogAppend:
                        new = new.apply()
                    data[k] = (new, expires)
            out.append(results)
        if len(data) > self._sweep_size or self._clock.monotonic() >= self._next_sweep:
            self._maybe_sweep(self._latest)
        return out

    def decide_one(self, check: Check, now_us: int | None = None) -> PolicyResult:
        """``decide_sync([[check]], now_us)[0][0]``, without the group machinery: a group of
        one check passes exactly when its check allows (or is shadow), so nothing waits."""
        policy = check.policy
        if policy.algorithm is Algorithm.CONCURRENCY:
            validate_group((check,))
        system = type(self._clock) is SystemClock
        if now_us is not None:
            now = now_us
        elif system:
            now = time_ns() // 1000  # the system clock without a float round trip
        else:
            now = self._now()
        if now > self._latest:
            self._latest = now
        data = self._data
        k = (check.key, policy.name, policy.algorithm)
        entry = data.get(k)
        state = None if entry is None else entry[0]
        step = self._step(policy)
        cost = check.cost
        allowed, remaining, reset, retry, new = step(state, now, cost, check.lease_id)
        if check.peek and allowed and cost:
            allowed, remaining, reset, retry, _ = step(state, now, 0, check.lease_id)
        elif new is not None and (allowed or policy.shadow):
            if type(new) is alg.LogAppend:
                new = new.apply()
            data[k] = (new, now + reset)
        if (
            len(data) > self._sweep_size
            or (monotonic() if system else self._clock.monotonic()) >= self._next_sweep
        ):
            self._maybe_sweep(self._latest)
        return policy_result(
            policy.name,
            allowed,
            policy.capacity,
            remaining,
            reset / 1_000_000,
            retry / 1_000_000,
            policy.shadow,
        )

    def _peek(self, check: Check, now: int) -> PolicyResult:
        """The check's state as it is: a cost of 0 is always admitted and debits nothing."""
        entry = self._data.get((check.key, check.policy.name, check.policy.algorithm))
        state = None if entry is None else entry[0]
        _, remaining, reset, _, _ = self._step(check.policy)(state, now, 0, check.lease_id)
        policy = check.policy
        return PolicyResult(
            policy.name, True, policy.capacity, remaining, reset / 1_000_000, 0.0, policy.shadow
        )

    async def decide(
        self, groups: Sequence[Sequence[Check]], now_us: int | None = None
    ) -> list[list[PolicyResult]]:
        """Decide a batch of groups (see :class:`~gatekeeper.types.Storage`)."""
        return self.decide_sync(groups, now_us)

    async def release(self, checks: Sequence[Check], lease_id: str) -> None:
        """Drop the concurrency slots held under ``lease_id``."""
        for check in checks:
            if check.policy.algorithm is not Algorithm.CONCURRENCY:
                continue
            k = (check.key, check.policy.name, check.policy.algorithm)
            entry = self._data.get(k)
            if entry is None:
                continue
            live = dict(entry[0])
            for member in alg.lease_members(lease_id, max(check.cost, 1)):
                live.pop(member, None)
            if live:
                self._data[k] = (live, entry[1])
            else:
                del self._data[k]

    async def reset(self, checks: Sequence[Check]) -> None:
        """Forget the state of the checks' keys."""
        for check in checks:
            self._data.pop((check.key, check.policy.name, check.policy.algorithm), None)

    async def ping(self) -> None:
        """Always answers: the store is this process."""

    async def aclose(self) -> None:
        """Drop all state."""
        self._data.clear()

    def __len__(self) -> int:
        """How many keys hold state (expired ones count until the next sweep)."""
        return len(self._data)

    # -- housekeeping ----------------------------------------------------------------------

    def _maybe_sweep(self, now: int) -> None:
        now = max(now, self._latest)
        self._latest = now
        self.sweep(now)

    def sweep(self, now_us: int | None = None) -> int:
        """Drop every entry whose state is fully reset by ``now_us``; returns how many."""
        now = self._now() if now_us is None else now_us
        data = self._data
        expired = [k for k, (_, expires) in data.items() if expires <= now]
        for k in expired:
            del data[k]
        # Sweep again when the dict has doubled, so sweeping costs O(1) per write.
        self._sweep_size = max(1024, 2 * len(data))
        self._next_sweep = self._clock.monotonic() + self._sweep_interval
        return len(expired)
