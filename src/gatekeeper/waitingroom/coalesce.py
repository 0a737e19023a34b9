"""Coalesce concurrent calls into one store round trip per event-loop turn.

A replica serving thousands of enqueues or status polls a second would otherwise pay one Redis
round trip per request (ARCHITECTURE.md: ~11k/s at best). Calls made during one loop turn for
the same script and tenant are sent as one script invocation carrying all of them; each caller
gets its own slice of the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """Batches ``submit(group, item)`` calls per ``group`` and flushes them with ``run``.

    ``run(group, items)`` must return one result per item, in order. A failure of ``run`` is
    raised in every caller of that batch.
    """

    def __init__(
        self,
        run: Callable[[Hashable, Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._run = run
        self._max = max_batch
        self._pending: dict[Hashable, list[tuple[Item, asyncio.Future[Result]]]] = {}
        # The event loop keeps only weak references to tasks: hold them until they finish.
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, group: Hashable, item: Item) -> asyncio.Future[Result]:
        """Add ``item`` to ``group``'s batch of this loop turn; await the returned future.

        A plain function returning the future, not a coroutine: one frame less per request.
        """
        batch = self._pending.get(group)
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._pending[group] = []
            loop.call_soon(self._flush, group)
        else:
            # The loop of this turn's batch: get_running_loop() costs a getpid() system call
            # on every call (CPython checks for a fork), once per request otherwise.
            loop = batch[0][1].get_loop()
        future: asyncio.Future[Result] = loop.create_future()
        batch.append((item, future))
        if len(batch) >= self._max:
            # Full: send it now; later callers start a new batch.
            del self._pending[group]
            self._spawn(group, batch)
        return future

    def _flush(self, group: Hashable) -> None:
        batch = self._pending.pop(group, None)
        if batch:
            self._spawn(group, batch)

    def _spawn(self, group: Hashable, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(group, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, group: Hashable, batch: list[tuple[Item, asyncio.Future[Result]]]
    ) -> None:
        try:
            results = await self._run(group, [item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
