"""An in-process cache of hot identity lookups, invalidated on every replica via Redis pub/sub.

The gateway resolves an API key, its tier's policies and the IP rules on every request; reading
SQL each time would cap it at the database's speed. Each replica therefore keeps the answers in
memory. A change (tier upgrade, key revoked, IP denied) is applied to SQL, then announced on a
Redis channel; every replica, the writer included, drops the affected entries when the message
arrives, which on loopback takes about a millisecond. Entries also expire after ``ttl`` seconds,
a safety net for messages lost while a replica was disconnected (it clears everything when it
reconnects for the same reason). Without Redis (embedded mode) invalidation is local only.

Loads race with invalidations: a value read from SQL before a change but stored after the change
was announced would be stale until the TTL. Each namespace carries a generation number that an
invalidation bumps; a load stores its value only if the generation did not move meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import structlog

from gatekeeper.redis_client import pubsub
from gatekeeper.types import Clock, SystemClock

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["HotCache"]

T = TypeVar("T")
_log = structlog.get_logger("gatekeeper.identity.cache")
_ALL = "*"
_FAILED = object()  # what waiters of a load that failed are given (they load on their own)


class HotCache:
    """Namespaced key -> value cache with TTL and cross-replica invalidation."""

    def __init__(
        self,
        redis: Redis | None = None,
        *,
        channel: str = "gk:identity:invalidate",
        ttl: float = 30.0,
        max_entries: int = 100_000,
        clock: Clock | None = None,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock: Clock = clock or SystemClock()
        self._data: dict[str, dict[str, tuple[float, Any]]] = {}
        self._generation: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._loading: dict[tuple[str, str], tuple[int, asyncio.Future[Any]]] = {}
        self.invalidations_received = 0

    # -- reading ------------------------------------------------------------------------------

    async def get_or_load(self, namespace: str, key: str, load: Callable[[], Awaitable[T]]) -> T:
        """The cached value, or ``await load()`` stored for next time.

        One load per key at a time: requests that miss while it runs wait for it rather than
        each reading SQL (when a hot entry expires under load, that was one query per request
        in flight).
        """
        entries = self._data.get(namespace)
        now = self.clock.monotonic()
        if entries is not None:
            hit = entries.get(key)
            if hit is not None and hit[0] > now:
                value: T = hit[1]
                return value
        flight = (namespace, key)
        generation = self._generation.get(namespace, 0)
        running = self._loading.get(flight)
        if running is not None and running[0] == generation:
            # (A load begun before an invalidation may return what was invalidated: only a
            # load of the current generation is shared.)
            shared = await asyncio.shield(running[1])
            if shared is not _FAILED:
                return cast(T, shared)
            # The load it waited for failed or was cancelled: try on its own.
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[flight] = (generation, done)
        try:
            value = await load()
        except BaseException:
            done.set_result(_FAILED)
            raise
        finally:
            mine = self._loading.get(flight)
            if mine is not None and mine[1] is done:
                del self._loading[flight]
        done.set_result(value)
        if self._generation.get(namespace, 0) == generation:
            entries = self._data.setdefault(namespace, {})
            if len(entries) >= self.max_entries:
                entries.clear()  # crude, but bounded; hot keys come back at once
            entries[key] = (now + self.ttl, value)
        return value

    def size(self, namespace: str) -> int:
        return len(self._data.get(namespace, {}))

    def peek(self, namespace: str, key: str) -> tuple[bool, Any]:
        """``(True, value)`` when the value is cached and fresh, else ``(False, None)``: for
        callers that must not await (they load it through :meth:`get_or_load` later)."""
        entries = self._data.get(namespace)
        if entries is not None:
            hit = entries.get(key)
            if hit is not None and hit[0] > self.clock.monotonic():
                return True, hit[1]
        return False, None

    # -- invalidating -------------------------------------------------------------------------

    def drop(self, namespace: str, key: str = _ALL) -> None:
        """Forget ``key`` (or the whole namespace) in this process only."""
        self._generation[namespace] = self._generation.get(namespace, 0) + 1
        if key == _ALL:
            self._data.pop(namespace, None)
        else:
            entries = self._data.get(namespace)
            if entries is not None:
                entries.pop(key, None)

    def clear(self) -> None:
        for namespace in list(self._data) + list(self._generation):
            self.drop(namespace)

    async def invalidate(self, namespace: str, key: str = _ALL) -> None:
        """Forget ``key`` (``"*"``: the namespace) here and on every other replica."""
        self.drop(namespace, key)
        if self.redis is not None:
            message = json.dumps({"ns": namespace, "key": key})
            try:
                await self.redis.publish(self.channel, message)
            except Exception as exc:  # the change is in SQL; the TTL bounds staleness
                _log.warning("cache_invalidation_not_published", error=str(exc))

    # -- the listener -------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the channel (returns once subscribed); no-op without Redis."""
        if self.redis is None or self._task is not None:
            return
        self._task = asyncio.create_task(self._listen(), name="identity-cache-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=5.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        assert self.redis is not None
        backoff = 0.1
        failed = False
        while True:
            listener: Any = None
            try:
                listener = await pubsub(self.redis, refresh=failed, ignore_subscribe_messages=True)
                await listener.subscribe(self.channel)
                # Whatever changed while we were not listening is unknown: start clean.
                self.clear()
                self._ready.set()
                backoff = 0.1
                while True:
                    message = await listener.get_message(timeout=1.0)
                    if message is not None:
                        self._apply(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("cache_listener_reconnecting", error=str(exc))
                failed = True
                self.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if listener is not None:
                    with contextlib.suppress(Exception):
                        await listener.aclose()

    def _apply(self, data: object) -> None:
        try:
            body = json.loads(data) if isinstance(data, str | bytes) else None
            namespace, key = str(body["ns"]), str(body["key"])  # type: ignore[index]
        except (ValueError, KeyError, TypeError):
            return
        self.invalidations_received += 1
        self.drop(namespace, key)
