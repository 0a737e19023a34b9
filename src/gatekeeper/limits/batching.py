"""Coalesce concurrent decisions into one store call per event-loop turn.

A round trip to Redis costs far more than the script it runs (ARCHITECTURE.md: ~11k decisions/s
with one EVALSHA per decision, ~120k/s with 200 decisions per EVALSHA). So callers do not talk to
the store: they drop their group into the pending batch and await a future. The first submission
of a turn schedules a flush with ``loop.call_soon``; every task that runs in the same turn joins
the batch; the flush then sends the whole batch in one call. A batch reaching ``batch_max`` groups
is sent at once, so a batch is bounded and the added latency is at most one loop turn.

A lone batch would make this process and the store work in turn: the store idles while the
process decodes one batch and encodes the next, the process idles while the store runs it. So a
turn's batch of at least ``split_at`` groups, flushed while nothing is in flight, leaves as two
halves: the store runs the second while the process handles the answer to the first, whose
callers then form the next batch while the second is still out. Two batches stay in flight
from then on (measured: 78k -> 130k decisions/s with 64 callers on one core against Redis).

Several batches may be in flight at the same time (the store's connection pool carries them).
Groups that pass an explicit ``now_us`` (tests) are batched only with groups of the same ``now_us``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from gatekeeper.errors import ConfigurationError

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")

RunBatch = Callable[[list[T], "int | None"], Awaitable[list[R]]]
# Takes a batch on without a task: returns a future done once every caller's future is
# resolved, or None to leave the batch to ``run`` (see Batcher).
LaunchBatch = Callable[
    [list[T], "list[asyncio.Future[R]]", "int | None"], "asyncio.Future[None] | None"
]


class Batcher(Generic[T, R]):
    """Collects items submitted during one loop turn and runs them as one batch.

    ``run(items, now_us)`` must return one result per item, in order. If it raises, every
    caller of the batch gets the exception. ``launch(items, futures, now_us)``, if given, is
    offered each batch first: it may take it on with callbacks instead of a task and a chain
    of coroutines (a few microseconds a batch), resolving every future itself.
    """

    def __init__(
        self,
        run: RunBatch[T, R],
        *,
        batch_max: int = 256,
        split_at: int = 16,
        launch: LaunchBatch[T, R] | None = None,
    ) -> None:
        for name, value in (("batch_max", batch_max), ("split_at", split_at)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        self._run = run
        self._fast = launch
        self.batch_max = batch_max
        self.split_at = max(2, split_at)
        self._pending: dict[int | None, tuple[list[T], list[asyncio.Future[R]]]] = {}
        self._scheduled = False
        self._inflight: set[asyncio.Future[None]] = set()
        self.batches = 0
        self.items = 0
        self.largest = 0

    @property
    def in_flight(self) -> int:
        """Batches sent and not answered yet."""
        return len(self._inflight)

    def submit(self, item: T, now_us: int | None = None) -> asyncio.Future[R]:
        """Add ``item`` to this turn's batch; the future resolves to its result."""
        pending = self._pending
        entry = pending.get(now_us)
        if entry is None:
            loop = asyncio.get_running_loop()
            entry = pending[now_us] = ([], [])
        else:
            # The batch's first future knows the loop: asyncio.get_running_loop() makes a
            # getpid() system call each time, once per decision otherwise.
            loop = entry[1][0].get_loop()
        future: asyncio.Future[R] = loop.create_future()
        items, futures = entry
        items.append(item)
        futures.append(future)
        if len(items) >= self.batch_max:
            del self._pending[now_us]
            self._launch(loop, items, futures, now_us)
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending = {}
        for now_us, (items, futures) in pending.items():
            size = len(items)
            if size >= self.split_at and not self._inflight:
                half = size // 2
                self._launch(loop, items[:half], futures[:half], now_us)
                self._launch(loop, items[half:], futures[half:], now_us)
            else:
                self._launch(loop, items, futures, now_us)

    def _launch(
        self,
        loop: asyncio.AbstractEventLoop,
        items: list[T],
        futures: list[asyncio.Future[R]],
        now_us: int | None,
    ) -> None:
        size = len(items)
        self.batches += 1
        self.items += size
        if size > self.largest:
            self.largest = size
        fast = self._fast
        done = fast(items, futures, now_us) if fast is not None else None
        if done is None:
            done = loop.create_task(self._execute(items, futures, now_us))
        self._inflight.add(done)
        done.add_done_callback(self._inflight.discard)

    async def _execute(
        self, items: list[T], futures: list[asyncio.Future[R]], now_us: int | None
    ) -> None:
        try:
            results = await self._run(items, now_us)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:  # hand every failure to the callers, never lose one
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            try:
                future.set_result(result)
            except asyncio.InvalidStateError:  # a caller that gave up (cancelled) no longer listens
                pass

    async def drain(self) -> None:
        """Send what is pending and wait for every batch in flight."""
        if self._pending:
            self._flush(asyncio.get_running_loop())
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
