"""The Limiter: the one object the rest of Gatekeeper asks "may this request pass?".

One call decides all the policies of one request at once, all-or-nothing::

    limiter = Limiter(storage_from_url("redis://127.0.0.1:6379/0"))
    decision = await limiter.decide([Check(per_ip, "ip:203.0.113.7"), Check(per_key, "key:ab")])

On the way to the store a decision passes, in order:

1. the over-limit cache (a key denied until T is answered locally until T);
2. the store: the memory store synchronously (no I/O, nothing to batch); any other store through
   the :class:`~gatekeeper.limits.batching.Batcher` (one call per event-loop turn) under the
   breaker and the ``deadline``;
3. on failure, timeout or an open breaker, each policy's failure mode (open, closed, fallback).

The limiter never raises because the store is down: degraded decisions say so
(``Decision.degraded``), are counted in :attr:`Limiter.stats`, and are logged, rate-limited.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.batching import Batcher
from gatekeeper.limits.decision import Decision, PolicyResult
from gatekeeper.limits.overlimit import OverLimitCache
from gatekeeper.limits.policy import Algorithm, Check, FailureMode, Policy
from gatekeeper.limits.resilience import Breaker, BreakerState, Degraded, FailurePolicy, LogThrottle
from gatekeeper.limits.storage.memory import validate_group
from gatekeeper.types import Clock, Storage, SystemClock

__all__ = ["Limiter", "LimiterStats"]

_Results = list[PolicyResult]
_GROUP_CACHE = 65_536
_CONCURRENCY = Algorithm.CONCURRENCY  # one-check groups kept by Limiter.hit (cleared when full)
_SyncDecide = Callable[[Sequence[Sequence[Check]], "int | None"], list[list[PolicyResult]]]


_new = object.__new__
_slots: dict[str, Any] = dict(Decision.__dict__)
_set_allowed = _slots["allowed"].__set__
_set_results = _slots["results"].__set__
_set_degraded = _slots["degraded"].__set__
_set_shadow_denied = _slots["shadow_denied"].__set__


def _ready(decision: Decision) -> asyncio.Future[Decision]:
    """A future already resolved to ``decision`` (awaiting it does not suspend)."""
    future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
    future.set_result(decision)
    return future


def _failed(exc: BaseException) -> asyncio.Future[Decision]:
    """A future already failed with ``exc`` (raised where the caller awaits it)."""
    future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


def _resolve(futures: list[asyncio.Future[Decision]], decisions: list[Decision]) -> None:
    for future, decision in zip(futures, decisions, strict=True):
        try:
            future.set_result(decision)
        except asyncio.InvalidStateError:  # a caller that gave up (cancelled) no longer listens
            pass


def _fail(
    futures: list[asyncio.Future[Decision]], done: asyncio.Future[None], exc: BaseException
) -> None:
    for future in futures:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
    if not done.done():
        done.set_result(None)


def _admitted(result: PolicyResult) -> Decision:
    """``Decision(True, (result,))`` at a third of the cost: the hot path's most common answer.

    A frozen dataclass's ``__init__`` assigns through ``object.__setattr__`` field by field; the
    slot descriptors do the same work directly. ``test_limiter`` checks that both agree.
    """
    decision: Decision = _new(Decision)
    _set_allowed(decision, True)
    _set_results(decision, (result,))
    _set_degraded(decision, False)
    _set_shadow_denied(decision, False)
    return decision


@dataclass
class LimiterStats:
    """Counters of one limiter since it was created (cheap integer increments)."""

    decisions: int = 0
    allowed: int = 0
    denied: int = 0
    shadow_denied: int = 0
    over_limit_hits: int = 0
    degraded: int = 0
    degraded_by_reason: dict[str, int] = field(default_factory=dict)
    degraded_by_policy: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    batched_groups: int = 0
    largest_batch: int = 0
    storage_errors: int = 0
    breaker_state: str = "closed"
    # "degraded" from a batch decided without the store until the store answers again.
    state: str = "ok"

    @property
    def mean_batch(self) -> float:
        """Average number of groups per store call."""
        return self.batched_groups / self.batches if self.batches else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (for ``/stats`` and the dashboard)."""
        return {
            "decisions": self.decisions,
            "allowed": self.allowed,
            "denied": self.denied,
            "shadow_denied": self.shadow_denied,
            "over_limit_hits": self.over_limit_hits,
            "degraded": self.degraded,
            "degraded_by_reason": dict(self.degraded_by_reason),
            "degraded_by_policy": dict(self.degraded_by_policy),
            "batches": self.batches,
            "batched_groups": self.batched_groups,
            "largest_batch": self.largest_batch,
            "mean_batch": round(self.mean_batch, 2),
            "storage_errors": self.storage_errors,
            "breaker_state": self.breaker_state,
            "state": self.state,
        }


class Limiter:
    """Decides checks against a :class:`~gatekeeper.types.Storage`, fast and fault-tolerant.

    ``deadline`` bounds each store call (seconds); ``batch_max`` bounds a batch; ``breaker``
    defaults to 3 consecutive failures -> 1 s cool-down; ``over_limit_cache`` may be ``False``,
    ``True`` or a ready :class:`OverLimitCache`; ``closed_retry_after`` is what fail-closed
    denials tell clients to wait. ``clock`` drives the breaker, the over-limit cache, the fallback
    store and log throttling; windows themselves follow the store's clock (Redis ``TIME``).
    ``metrics`` (a :class:`gatekeeper.observability.metrics.Metrics`) receives the duration of
    every store call and every degraded decision; per-policy verdicts are left to the caller,
    which knows its route.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        deadline: float = 0.020,
        batch_max: int = 256,
        clock: Clock | None = None,
        breaker: Breaker | None = None,
        over_limit_cache: bool | OverLimitCache = True,
        logger: Any = None,
        closed_retry_after: float = 1.0,
        fallback_storage: Storage | None = None,
        metrics: Any = None,
    ) -> None:
        if not (isinstance(deadline, int | float) and deadline > 0):
            raise ConfigurationError(f"deadline must be positive seconds, got {deadline!r}")
        if not closed_retry_after > 0:
            raise ConfigurationError(
                f"closed_retry_after must be positive seconds, got {closed_retry_after!r}"
            )
        self.storage = storage
        self.metrics = metrics
        self._store_label = "memory" if hasattr(storage, "decide_sync") else "redis"
        self.deadline = float(deadline)
        self.clock: Clock = clock or SystemClock()
        self.breaker = breaker or Breaker(clock=self.clock)
        if over_limit_cache is True:
            self.over_limit: OverLimitCache | None = OverLimitCache()
        elif over_limit_cache is False:
            self.over_limit = None
        else:
            self.over_limit = over_limit_cache
        self._logger = logger or structlog.get_logger("gatekeeper.limits")
        self._log = LogThrottle(self._logger, self.clock)
        self._degraded_at = (0.0, 0)  # when the current degraded episode began, and the count
        self.failure = FailurePolicy(
            clock=self.clock,
            closed_retry_after=closed_retry_after,
            fallback_storage=fallback_storage,
        )
        # The memory store has no I/O: deciding synchronously beats any batching.
        self._sync: _SyncDecide | None = getattr(storage, "decide_sync", None)
        self._sync_one: Callable[[Check, int | None], PolicyResult] | None = getattr(
            storage, "decide_one", None
        )
        # A store that can send a batch without a coroutine (Redis on a lean connection):
        # batches then go out through _launch, callbacks instead of a task per batch.
        self._decide_soon: Callable[..., asyncio.Future[Any] | None] | None = getattr(
            storage, "decide_soon", None
        )
        self._settle: Callable[..., list[_Results] | None] | None = getattr(storage, "settle", None)
        fast = self._decide_soon is not None and self._settle is not None
        self._batcher: Batcher[Sequence[Check], Decision] = Batcher(
            self._run_and_conclude, batch_max=batch_max, launch=self._launch if fast else None
        )
        self._follow_ups: set[asyncio.Task[None]] = set()
        self._stats = LimiterStats()
        self._groups: dict[tuple[int, str], tuple[Check]] = {}
        self._closed = False

    # -- public API ---------------------------------------------------------------------------

    @property
    def stats(self) -> LimiterStats:
        """Counters: decisions, denials, degraded decisions by reason and policy, batches."""
        stats = self._stats
        batcher = self._batcher
        stats.batches = batcher.batches
        stats.batched_groups = batcher.items
        stats.largest_batch = batcher.largest
        stats.over_limit_hits = self.over_limit.hits if self.over_limit is not None else 0
        stats.breaker_state = self.breaker.state.value
        return stats

    def decide(self, checks: Sequence[Check], *, now_us: int | None = None) -> Awaitable[Decision]:
        """Decide the checks of ONE request, all-or-nothing (await it); never fails for store
        failures. A malformed group fails with :class:`ConfigurationError` when awaited.

        ``now_us`` overrides the store's clock (tests and simulations only).

        Not a coroutine function: on Redis the awaitable is the batch's own future for this
        group, already resolved to the :class:`Decision` (concluded once per batch), so a
        decision costs no coroutine frame of its own; the other paths answer at once.
        """
        if not checks:
            return _ready(Decision(True, ()))
        cache = self.over_limit
        if cache is not None and cache._entries:  # an empty cache costs no clock read
            now = self.clock.monotonic()
            hits: list[PolicyResult] | None = None
            for check in checks:
                hit = cache.lookup(check, now)
                if hit is not None:
                    if hits is None:
                        hits = [hit]
                    else:
                        hits.append(hit)
            if hits is not None:
                return _ready(self._cached_denial(hits))
        sync = self._sync
        if sync is not None:
            try:
                one = self._sync_one
                if one is not None and len(checks) == 1:
                    results: _Results = [one(checks[0], now_us)]
                else:
                    results = sync((checks,), now_us)[0]
            except ConfigurationError as exc:
                return _failed(exc)
            return _ready(self._conclude(checks, results))
        # A malformed group must fail its own caller here, not poison a whole batch (and
        # count as a store failure towards the breaker). One plain check is always valid.
        if len(checks) > 1 or checks[0].policy.algorithm is Algorithm.CONCURRENCY:
            try:
                validate_group(checks)
            except ConfigurationError as exc:
                return _failed(exc)
        return self._batcher.submit(checks, now_us)

    # hit() and peek() hand back decide()'s awaitable instead of wrapping it in a coroutine of
    # their own: no coroutine frame per decision on the hot path; callers await them alike.

    def hit(
        self, policy: Policy, key: str, cost: int = 1, *, now_us: int | None = None
    ) -> Awaitable[Decision]:
        """Decide one policy for one subject, debiting ``cost`` if admitted (await it)."""
        if cost == 1:
            # The same subjects come back: reuse their (immutable) one-check groups rather
            # than build and validate a Check per hit. Keyed by id(policy), so each entry
            # remembers its policy and an id reused by a new policy is not mistaken for it.
            groups = self._groups
            group = groups.get((id(policy), key))
            if group is None or group[0].policy is not policy:
                if len(groups) >= _GROUP_CACHE:
                    groups.clear()
                group = groups[(id(policy), key)] = (policy.check(key, 1),)
            cache = self.over_limit
            if (
                self._sync is None
                and (cache is None or not cache._entries)
                and policy.algorithm is not _CONCURRENCY
            ):
                # What decide() would do for this group, without its call: straight to the batch.
                return self._batcher.submit(group, now_us)
            return self.decide(group, now_us=now_us)
        return self.decide((policy.check(key, cost),), now_us=now_us)

    def peek(
        self, policy: Policy, key: str, cost: int = 1, *, now_us: int | None = None
    ) -> Awaitable[Decision]:
        """Would a hit of ``cost`` be admitted now? Debits nothing (await it)."""
        return self.decide((Check(policy, key, cost, peek=True),), now_us=now_us)

    @asynccontextmanager
    async def lease(
        self, policy: Policy, key: str, cost: int = 1, *, now_us: int | None = None
    ) -> AsyncIterator[Decision]:
        """Hold a concurrency slot for the ``async with`` block (check ``decision.allowed``).

        The slot is released when the block exits, however it exits; a holder that dies keeps it
        at most ``policy.lease_ttl`` seconds.
        """
        if policy.algorithm is not Algorithm.CONCURRENCY:
            raise ConfigurationError(
                f"policy {policy.name!r}: lease() needs a concurrency policy, "
                f"not {policy.algorithm.value}"
            )
        lease_id = uuid.uuid4().hex
        checks = (Check(policy, key, cost, lease_id=lease_id),)
        decision = await self.decide(checks, now_us=now_us)
        try:
            yield decision
        finally:
            if decision.allowed or decision.shadow_denied:
                await self.release(checks, lease_id, degraded=decision.degraded)

    async def release(
        self, checks: Sequence[Check], lease_id: str, *, degraded: bool = False
    ) -> None:
        """Give back concurrency leases taken by ``decide``; never raises for store failures."""
        if degraded:
            await self.failure.release(checks, lease_id)
            return
        try:
            async with asyncio.timeout(self.deadline):
                await self.storage.release(checks, lease_id)
        except Exception as exc:  # the lease expires by itself after lease_ttl
            self._stats.storage_errors += 1
            self._log.warning("limiter.release_failed", error=repr(exc))

    async def reset(self, policy: Policy, key: str) -> None:
        """Forget a subject's state for a policy (admin "reset this client")."""
        if self.over_limit is not None:
            self.over_limit.discard(policy.name, key)
        await self.storage.reset([Check(policy, key)])

    async def aclose(self) -> None:
        """Finish the batches in flight, then close the store and the fallback store."""
        if self._closed:
            return
        self._closed = True
        await self._batcher.drain()
        await self.failure.aclose()
        await self.storage.aclose()

    # -- internals ----------------------------------------------------------------------------

    def _conclude(self, checks: Sequence[Check], results: _Results) -> Decision:
        stats = self._stats
        stats.decisions += 1
        if len(results) == 1 and type(results) is list:
            # The common case, kept lean: one policy, decided by the store.
            only = results[0]
            if only.allowed:
                stats.allowed += 1
                return _admitted(only)
            if only.shadow:
                stats.allowed += 1
                stats.shadow_denied += 1
                return Decision(True, (only,), False, True)
        allowed = True
        shadow_denied = False
        for result in results:
            if not result.allowed:
                if result.shadow:
                    shadow_denied = True
                else:
                    allowed = False
        degraded = False
        if isinstance(results, Degraded):
            degraded = True
            self._count_degraded(checks, results.reason)
        elif not allowed and self.over_limit is not None:
            now = self.clock.monotonic()
            for check, result in zip(checks, results, strict=True):
                if not result.allowed:
                    self.over_limit.add(check, result, now)
        if allowed:
            stats.allowed += 1
        else:
            stats.denied += 1
        if shadow_denied:
            stats.shadow_denied += 1
        return Decision(allowed, tuple(results), degraded, shadow_denied)

    def _cached_denial(self, hits: list[PolicyResult]) -> Decision:
        # The group is denied, so nothing would be debited: answering locally is exact. Only the
        # cached denials are reported; the other policies' state is unknown without the store.
        stats = self._stats
        stats.decisions += 1
        stats.denied += 1
        return Decision(False, tuple(hits))

    def _count_degraded(self, checks: Sequence[Check], reason: str) -> None:
        stats = self._stats
        stats.degraded += 1
        by_reason = stats.degraded_by_reason
        by_reason[reason] = by_reason.get(reason, 0) + 1
        by_policy = stats.degraded_by_policy
        metrics = self.metrics
        for check in checks:
            policy = check.policy
            by_policy[policy.name] = by_policy.get(policy.name, 0) + 1
            if metrics is not None:
                if policy.failure is FailureMode.CLOSED:
                    metrics.degraded_decision("fail_closed")
                elif policy.fallback is not None:
                    metrics.degraded_decision("local")
                else:
                    metrics.degraded_decision("fail_open")

    async def _run_and_conclude(
        self, groups: list[Sequence[Check]], now_us: int | None
    ) -> list[Decision]:
        """One store call for the batch, then each group's :class:`Decision`."""
        return self._conclude_batch(groups, await self._run_batch(groups, now_us))

    def _conclude_batch(
        self, groups: list[Sequence[Check]], results: list[_Results]
    ) -> list[Decision]:
        """Each group's :class:`Decision` from the store's results."""
        # The common case inline (one admitted policy per group), the rest via _conclude: at
        # 32 decisions a batch, a call per decision is a measurable share of the CPU.
        out: list[Decision] = []
        append = out.append
        admitted = 0
        for group, result in zip(groups, results, strict=True):
            # (A degraded group's results are a Degraded list, which _conclude counts.)
            if type(result) is list and len(result) == 1 and result[0].allowed:
                admitted += 1
                append(_admitted(result[0]))
            else:
                append(self._conclude(group, result))
        stats = self._stats
        stats.decisions += admitted
        stats.allowed += admitted
        return out

    def _launch(
        self,
        groups: list[Sequence[Check]],
        futures: list[asyncio.Future[Decision]],
        now_us: int | None,
    ) -> asyncio.Future[None] | None:
        """Send a batch with callbacks only (see Batcher); None leaves it to the task path,
        which also carries every breaker probe."""
        decide_soon = self._decide_soon
        if decide_soon is None or self.breaker.state is not BreakerState.CLOSED:
            return None
        try:
            reply = decide_soon(groups, now_us)
        except Exception:  # the task path meets the same failure and reports it
            return None
        if reply is None:
            return None
        loop = reply.get_loop()
        done: asyncio.Future[None] = loop.create_future()
        # The deadline: cancelling the reply's future drops the late answer when it comes. It
        # counts the store's time, not this process's: see _expire.
        timer = _expire(loop, self.deadline, reply)
        started = time.perf_counter() if self.metrics is not None else 0.0

        def landed(reply: asyncio.Future[Any]) -> None:
            timer.cancel()
            try:
                self._landed(groups, futures, now_us, done, reply, started)
            except BaseException as exc:  # never leave a caller waiting
                _fail(futures, done, exc)
                raise

        reply.add_done_callback(landed)
        return done

    def _landed(
        self,
        groups: list[Sequence[Check]],
        futures: list[asyncio.Future[Decision]],
        now_us: int | None,
        done: asyncio.Future[None],
        reply: asyncio.Future[Any],
        started: float,
    ) -> None:
        assert self._settle is not None
        try:
            if reply.cancelled():
                raise TimeoutError(f"Redis did not answer within {self.deadline} s")
            results = self._settle(groups, reply.result())
        except TimeoutError as exc:
            self.breaker.failure()
            self._follow_up(self._degrade(groups, "timeout", exc), groups, futures, done)
            return
        except Exception as exc:  # StorageError, or the connection's loss
            self.breaker.failure()
            self._follow_up(self._degrade(groups, "error", exc), groups, futures, done)
            return
        if results is None:  # NOSCRIPT: nothing ran; the task path loads the script, resends
            self._follow_up(self._run_batch(groups, now_us), groups, futures, done)
            return
        self.breaker.success()
        if self._stats.state != "ok":
            self._recovered()
        if self.metrics is not None:
            self.metrics.store_call(self._store_label, time.perf_counter() - started)
        _resolve(futures, self._conclude_batch(groups, results))
        done.set_result(None)

    def _follow_up(
        self,
        work: Coroutine[Any, Any, list[_Results]],
        groups: list[Sequence[Check]],
        futures: list[asyncio.Future[Decision]],
        done: asyncio.Future[None],
    ) -> None:
        """Finish a launched batch on the task path (degrading, or resending after NOSCRIPT)."""

        async def finish() -> None:
            try:
                decisions = self._conclude_batch(groups, await work)
            except BaseException as exc:
                _fail(futures, done, exc)
                raise
            _resolve(futures, decisions)
            done.set_result(None)

        task = done.get_loop().create_task(finish())
        self._follow_ups.add(task)
        task.add_done_callback(self._follow_ups.discard)

    async def _run_batch(self, groups: list[Sequence[Check]], now_us: int | None) -> list[_Results]:
        """One store call for the whole batch, bounded by the deadline, guarded by the breaker."""
        breaker = self.breaker
        if not breaker.allow():
            return await self._degrade(groups, "breaker_open", None)
        metrics = self.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        try:
            async with _bounded(self.deadline):
                results = await self.storage.decide(groups, now_us)
        except TimeoutError as exc:
            breaker.failure()
            return await self._degrade(groups, "timeout", exc)
        except Exception as exc:  # StorageError, or anything a store failed to translate
            breaker.failure()
            return await self._degrade(groups, "error", exc)
        breaker.success()
        if self._stats.state != "ok":
            self._recovered()
        if metrics is not None:
            metrics.store_call(self._store_label, time.perf_counter() - started)
        return results

    async def _degrade(
        self, groups: list[Sequence[Check]], reason: str, exc: BaseException | None
    ) -> list[_Results]:
        stats = self._stats
        if exc is not None:
            stats.storage_errors += 1
        if stats.state == "ok":  # one line when decisions start going without the store
            stats.state = "degraded"
            self._degraded_at = (self.clock.monotonic(), stats.degraded)
            self._logger.warning(
                "limiter.degraded",
                reason=reason,
                breaker=self.breaker.state.value,
                error=repr(exc) if exc is not None else None,
            )
        return list(await self.failure.decide(groups, reason))

    def _recovered(self) -> None:
        """The store answered again: one line, with what the episode decided without it."""
        stats = self._stats
        stats.state = "ok"
        since, before = self._degraded_at
        self._logger.warning(
            "limiter.recovered",
            seconds=round(self.clock.monotonic() - since, 3),
            degraded_decisions=stats.degraded - before,
        )


# How long a deadline that expired is held open for one more poll of the sockets. A busy event
# loop runs its due timers before it reads what arrived meanwhile (libuv does), so an answer
# already waiting in the socket would otherwise be dropped as late: the deadline would measure
# this process's backlog, not the store (issue 14: a saturated replica skipped ~3,000 decisions
# with a healthy Redis). One millisecond is uvloop's timer resolution.
_POLL_GRACE = 0.001


def _expire(
    loop: asyncio.AbstractEventLoop, deadline: float, reply: asyncio.Future[Any]
) -> _Expiry:
    """Cancel ``reply`` once ``deadline`` has passed and the loop has read its sockets once
    more (an answer read meanwhile has resolved ``reply``: cancelling it is then a no-op)."""
    return _Expiry(loop, deadline, reply.cancel, reply.done)


class _Expiry:
    """A deadline for the store, not for this process (see ``_POLL_GRACE``): when it passes
    while the loop was busy (its timer fires late), the call may have left late or its answer
    may sit unread, so it runs once more from now; then, before ``expire``, the loop polls its
    sockets once more. At most twice the deadline plus the loop's own lag."""

    __slots__ = ("deadline", "done", "due", "expire", "extended", "loop", "timer")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        expire: Callable[[], object],
        done: Callable[[], bool],
    ) -> None:
        self.loop = loop
        self.deadline = deadline
        self.expire = expire
        self.done = done
        self.extended = False
        self.due = loop.time() + deadline
        self.timer = loop.call_at(self.due, self.fire)

    def fire(self) -> None:
        if self.done():
            return
        loop = self.loop
        now = loop.time()
        if not self.extended and now - self.due > _POLL_GRACE:
            self.extended = True
            self.due = now + self.deadline
            self.timer = loop.call_at(self.due, self.fire)
            return
        self.timer = loop.call_later(_POLL_GRACE, self.expire)

    def cancel(self) -> None:
        self.timer.cancel()


@asynccontextmanager
async def _bounded(deadline: float) -> AsyncIterator[None]:
    """``asyncio.timeout(deadline)`` for the task path, the deadline counted as in
    :func:`_expire`. Expiring reschedules the timeout to now, which asyncio carries out with
    ``call_soon``: after the wake-up of a task whose answer that last poll read, so that the
    answer is taken rather than cancelled."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as scope:
        expiry = _Expiry(loop, deadline, lambda: scope.reschedule(loop.time()), lambda: False)
        try:
            yield
        finally:
            expiry.cancel()
