"""Per-pool concurrency limit with a bounded priority queue in front of it.

While fewer than ``max_concurrency`` requests are in flight, a request passes straight through
(no allocation, no await). Beyond that it waits in a queue of at most ``size`` entries ordered
by priority (higher first) and arrival (FIFO within a priority). A finishing request hands its
slot directly to the first waiter, so late arrivals cannot overtake the queue. A request that
finds the queue full, or waits longer than ``timeout``, gets :class:`~gatekeeper.errors.QueueFull`
(the gateway answers 503 with ``Retry-After``).

Cancellation is safe at any point: a cancelled waiter leaves the queue, and one cancelled just
after it was handed a slot passes that slot on, so slots never leak.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from gatekeeper.errors import ConfigurationError, QueueFull

__all__ = ["AdmissionController", "QueueConfig"]


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """How many requests may wait (``size``) and for how long (``timeout`` seconds)."""

    size: int = 100
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ConfigurationError(f"queue.size must be >= 0, got {self.size}")
        if self.timeout <= 0:
            raise ConfigurationError(f"queue.timeout must be > 0, got {self.timeout}")


class AdmissionController:
    """The admission gate of one pool. ``max_concurrency=None`` admits everything."""

    def __init__(
        self,
        max_concurrency: int | None,
        queue: QueueConfig | None = None,
        *,
        on_depth: Callable[[int], None] | None = None,
        on_wait: Callable[[float, str | None], None] | None = None,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.queue = queue or QueueConfig()
        self.active = 0
        self.admitted = 0
        self.rejected_full = 0
        self.timed_out = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._retry_after = max(1, math.ceil(self.queue.timeout))
        self._unlimited = _Unlimited()
        #: Observers for metrics: the queue depth when it changes, and each finished wait as
        #: (seconds, None | "full" | "timeout"). The pass-through path calls neither.
        self.on_depth = on_depth
        self.on_wait = on_wait

    @property
    def queued(self) -> int:
        """How many requests wait right now."""
        return len(self._waiters)

    def slot(self, priority: int = 0) -> _Slot | _Unlimited:
        """An async context manager holding one concurrency slot while inside it."""
        if self.max_concurrency is None:
            return self._unlimited
        return _Slot(self, priority)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody queues for it (no wait: the request path's
        answer-now way); False: :meth:`acquire` queues."""
        limit = self.max_concurrency
        if limit is None:
            return True
        if self.active < limit and not self._waiters:
            self.active += 1
            self.admitted += 1
            return True
        return False

    async def acquire(self, priority: int = 0) -> None:
        """Take a slot, waiting in the queue if needed; raises QueueFull."""
        limit = self.max_concurrency
        if limit is None:
            return
        if self.active < limit and not self._waiters:
            self.active += 1
            self.admitted += 1
            return
        if len(self._waiters) >= self.queue.size:
            self.rejected_full += 1
            if self.on_wait is not None:
                self.on_wait(0.0, "full")
            raise QueueFull(
                f"queue full ({self.queue.size} waiting, {limit} in flight)", self._retry_after
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (-priority, next(self._seq), future)
        heapq.heappush(self._waiters, entry)
        self._depth_changed()
        started = loop.time()
        timer = loop.call_later(self.queue.timeout, self._expire, future)
        try:
            await future
        except BaseException as exc:
            if future.done() and not future.cancelled() and future.exception() is None:
                # Handed a slot, then cancelled before running: pass the slot on.
                self.release()
            else:
                self._remove(entry)
            if self.on_wait is not None:
                timed_out = isinstance(exc, QueueFull)
                self.on_wait(loop.time() - started, "timeout" if timed_out else None)
            raise
        finally:
            timer.cancel()
        self.admitted += 1
        if self.on_wait is not None:
            self.on_wait(loop.time() - started, None)

    def release(self) -> None:
        """Give a slot back: to the first live waiter if any, else to the pool."""
        waiters = self._waiters
        while waiters:
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)  # the slot moves to this waiter; active stays
                self._depth_changed()
                return
        self.active -= 1

    def snapshot(self) -> dict[str, Any]:
        """Limits and counters for ``/stats``."""
        return {
            "max_concurrency": self.max_concurrency,
            "active": self.active,
            "queued": self.queued,
            "queue_size": self.queue.size,
            "queue_timeout": self.queue.timeout,
            "admitted": self.admitted,
            "rejected_full": self.rejected_full,
            "timed_out": self.timed_out,
        }

    def _expire(self, future: asyncio.Future[None]) -> None:
        if not future.done():
            self.timed_out += 1
            future.set_exception(
                QueueFull(f"waited {self.queue.timeout:g}s in the queue", self._retry_after)
            )

    def _remove(self, entry: tuple[int, int, asyncio.Future[None]]) -> None:
        try:
            self._waiters.remove(entry)
        except ValueError:
            return
        heapq.heapify(self._waiters)
        self._depth_changed()

    def _depth_changed(self) -> None:
        if self.on_depth is not None:
            self.on_depth(len(self._waiters))


class _Slot:
    __slots__ = ("_controller", "_priority")

    def __init__(self, controller: AdmissionController, priority: int) -> None:
        self._controller = controller
        self._priority = priority

    async def __aenter__(self) -> None:
        await self._controller.acquire(self._priority)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._controller.release()


class _Unlimited:
    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None
