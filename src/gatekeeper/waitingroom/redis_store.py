"""The waiting room's state in Redis: shared by every replica, changed only by Lua scripts.

Keys of tenant ``t`` (``<prefix>:wr:{t}:`` + suffix; the braces make one Cluster slot):

====================  =========================================================================
``seq``, ``head``     last ticket issued; every ticket <= head has been admitted or skipped
``t:<n>``             hash ticket -> "<bucket>:<user>" for tickets 128n..128n+127 (listpack)
``u:<b>``             hash user -> ticket, bucket b = crc32(user) mod 32768 (listpack)
``gone``              sorted set of abandoned tickets above head (score = ticket)
``ready``             sorted set ticket -> ready-until (epoch seconds); admitted sessions
``live:<e>:<n>``      bitmap: tickets 65536n.. seen in liveness epoch e (1 bit per ticket)
``next``, ``hist``    when the next tick is due; the last 20 ticks as "time:admitted"
``sweep``             the abandonment sweep's cursor "epoch:ticket"
====================  =========================================================================

Small hashes stay in Redis' compact listpack encoding, which is what keeps a queued user at
~60 bytes (``bench/waitingroom.py`` measures it at 1M queued). Concurrent enqueues and status
polls of one tenant are coalesced into one script call per event-loop turn.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Awaitable, Hashable, Sequence
from importlib import resources
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from gatekeeper.errors import StorageError, StorageTimeout
from gatekeeper.lease import lease_script
from gatekeeper.limits.storage._resp import LeanPool, ReplyError, command, evalsha
from gatekeeper.limits.storage.redis import lean_pool_for
from gatekeeper.redis_client import redis_from_url
from gatekeeper.waitingroom.coalesce import Coalescer
from gatekeeper.waitingroom.deadline import StoreGuard
from gatekeeper.waitingroom.store import (
    USER_BUCKETS,
    AdmitResult,
    EnqueueResult,
    QueueStats,
    TicketState,
    TicketStatus,
)

__all__ = ["RedisStore", "tenant_base"]

SWEEP_BUDGET = 2000
_GONE = TicketStatus(TicketState.GONE)


def tenant_base(prefix: str, tenant: str) -> str:
    """The key prefix of one tenant, hash-tagged so that all its keys share a Cluster slot."""
    safe = tenant.replace("{", "(").replace("}", ")")
    return f"{prefix}:wr:{{{safe}}}:"


def _load(name: str) -> str:
    if name in ("lease", "release"):
        return lease_script(name)  # shared with every other leader (gatekeeper.lease)
    lua = resources.files("gatekeeper.waitingroom") / "lua"
    return (lua / "_lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class _Script:
    """One Lua script, called by SHA and reloaded if the server forgot it.

    With ``lean`` (a plain ``redis://`` server) the calls travel over the limiter's lean
    pipelined client: redis-py's per-call machinery was ~8% of an HTTP status poll.
    """

    def __init__(self, redis: Redis, source: str, lean: LeanPool | None = None) -> None:
        self.redis = redis
        self.source = source
        self.lean = lean
        self.sha: str | None = None

    async def _load(self) -> str:
        """Load the script; its SHA. On a lean server through the lean client, whose
        connections reopen by themselves (a pooled redis-py connection to a restarted server
        fails once more before it notices)."""
        if self.lean is None:
            return str(await self.redis.script_load(self.source))
        reply = await self.lean.call(command(b"SCRIPT", b"LOAD", self.source))
        if isinstance(reply, ReplyError):
            raise StorageError(f"Redis refused the script: {reply}")
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            if self.sha is None:
                self.sha = await self._load()
            if self.lean is not None:
                return await self._lean_call(self.lean, self.sha, keys, args)
            try:
                return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                self.sha = str(await self.redis.script_load(self.source))
                return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except RedisTimeout as exc:
            raise StorageTimeout(f"waiting room store timed out: {exc}") from exc
        except StorageTimeout:  # the lean client's own errors, already translated
            raise
        except StorageError as exc:
            raise StorageError(f"waiting room store failed: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise StorageError(f"waiting room store failed: {exc}") from exc

    async def _lean_call(
        self, lean: LeanPool, sha: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        reply = await lean.call(evalsha(sha, keys, args))
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            # Redis restarted or failed over and lost its scripts: load, send once more.
            self.sha = sha = await self._load()
            reply = await lean.call(evalsha(sha, keys, args))
        if isinstance(reply, ReplyError):
            raise StorageError(f"Redis answered {reply}")
        return reply


class RedisStore:
    """:class:`~gatekeeper.waitingroom.store.WaitingRoomStore` on Redis (one or Cluster)."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "gk",
        owns_client: bool = False,
        batch_max: int = 64,
        lean: bool = False,
        guard: StoreGuard | None = None,
    ) -> None:
        """``lean``: send the scripts over the limiter's lean client when ``redis`` is a plain
        TCP client (its own two connections, closed by :meth:`aclose`, which must then be
        awaited). ``guard``: the deadline and breaker every call passes (``deadline.py``)."""
        self.redis = redis
        self.guard = guard or StoreGuard()
        self.prefix = prefix
        self._owns = owns_client
        self._lean = lean_pool_for(redis) if lean else None
        self._scripts = {
            name: _Script(redis, _load(name), self._lean)
            for name in ("enqueue", "status", "finish", "admit", "stats", "lease", "release")
        }
        # Batches of at most `batch_max` keep several script calls in flight, so that Python
        # finishes one batch's requests while Redis runs the next.
        self._enqueues: Coalescer[tuple[bytes, float], EnqueueResult] = Coalescer(
            self._enqueue_batch, max_batch=batch_max
        )
        self._statuses: Coalescer[tuple[bytes, float], TicketStatus] = Coalescer(
            self._status_batch, max_batch=batch_max
        )

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "gk") -> RedisStore:
        """A store with its own connection pool (the worker process and benchmarks); any URL
        :func:`~gatekeeper.redis_client.redis_from_url` takes, a Cluster's included."""
        return cls(redis_from_url(url), prefix=prefix, owns_client=True)

    def _base(self, tenant: str) -> str:
        return tenant_base(self.prefix, tenant)

    # -- enqueue and status: coalesced per tenant; a batch uses the latest clock reading ------
    # Each caller packs its own item as "<number>:<byte length>:<user>" (one argument for the
    # whole batch instead of two per item: redis-py's per-argument packing cost more than the
    # rest of the batch), and a user id that cannot be encoded fails only its own call.

    def enqueue(self, tenant: str, user: str, now: float, grace: int) -> Awaitable[EnqueueResult]:
        raw = user.encode()
        item = b"%d:%d:%s" % (zlib.crc32(raw) % USER_BUCKETS, len(raw), raw)
        return self._enqueues.submit((tenant, grace), (item, now))

    async def _enqueue_batch(
        self, group: Hashable, items: Sequence[tuple[bytes, float]]
    ) -> list[EnqueueResult]:
        tenant, grace = cast(tuple[str, int], group)
        now = max(item[1] for item in items)
        base = self._base(tenant)
        args = [base, repr(now), int(now // grace), 3 * grace, b"".join(i[0] for i in items)]
        script = self._scripts["enqueue"]
        flat = await self.guard.call("enqueue", lambda: script([base + "seq"], args))
        queued, ready = TicketState.QUEUED, TicketState.READY
        return [
            EnqueueResult(
                flat[i],
                ready if flat[i + 1] else queued,
                flat[i + 2] if flat[i + 2] >= 0 else None,
                flat[i + 3] == 1,
            )
            for i in range(0, len(flat), 4)
        ]

    def status(
        self, tenant: str, ticket: int, user: str, now: float, grace: int
    ) -> Awaitable[TicketStatus]:
        raw = user.encode()
        item = b"%d:%d:%s" % (ticket, len(raw), raw)
        return self._statuses.submit((tenant, grace), (item, now))

    async def verify(self, tenant: str, ticket: int, user: str, now: float) -> bool:
        status = await self.status(tenant, ticket, user, now, 0)
        return status.state is TicketState.READY

    async def _status_batch(
        self, group: Hashable, items: Sequence[tuple[bytes, float]]
    ) -> list[TicketStatus]:
        # grace 0 marks a verification: it reads without touching liveness.
        tenant, grace = cast(tuple[str, int], group)
        now = max(item[1] for item in items)
        base = self._base(tenant)
        epoch = int(now // grace) if grace else 0
        args = [base, repr(now), epoch, 3 * grace, int(grace > 0), b"".join(i[0] for i in items)]
        script = self._scripts["status"]
        flat = await self.guard.call("status", lambda: script([base + "seq"], args))
        results = []
        for i in range(0, len(flat), 2):
            state, value = flat[i], flat[i + 1]
            if state == 0:
                results.append(TicketStatus(TicketState.QUEUED, value))
            elif state == 1:
                results.append(TicketStatus(TicketState.READY, None, value / 1000))
            else:
                results.append(_GONE)
        return results

    async def finish(self, tenant: str, ticket: int, user: str, now: float) -> bool:
        base = self._base(tenant)
        script = self._scripts["finish"]
        done = await self.guard.call(
            "finish", lambda: script([base + "seq"], [base, repr(now), ticket, user])
        )
        return bool(done)

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
        base = self._base(tenant)
        args = [base, repr(now), int(now // grace), limit, frequency, ready_ttl]
        args += [max_catch_up, SWEEP_BUDGET]
        script = self._scripts["admit"]
        reply = await self.guard.background("admit", lambda: script([base + "seq"], args))
        ticks, admitted, skipped, expired, abandoned, head, nxt = (int(v) for v in reply)
        return AdmitResult(ticks, admitted, skipped, expired, abandoned, head, nxt / 1000)

    async def stats(self, tenant: str, now: float) -> QueueStats:
        return await self.guard.call("stats", lambda: self._stats(tenant, now))

    async def _stats(self, tenant: str, now: float) -> QueueStats:
        base = self._base(tenant)
        script = self._scripts["stats"]
        seq, head, gone, ready, nxt, hist = await script([base + "seq"], [base, repr(now)])
        history = []
        for entry in hist:
            when, _, count = entry.decode().partition(":")
            history.append((float(when), int(count)))
        return QueueStats(
            queued=max(0, int(seq) - int(head) - int(gone)),
            ready=int(ready),
            head=int(head),
            last_ticket=int(seq),
            next_tick=float(nxt) if nxt else None,
            history=tuple(history),
        )

    async def acquire_lease(self, name: str, owner: str, ttl: float, now: float) -> bool:
        key = f"{self.prefix}:wr:lease:{name}"
        script = self._scripts["lease"]
        args = [owner, max(1, math.ceil(ttl * 1000))]
        held = await self.guard.background("lease", lambda: script([key], args))
        return bool(held)

    async def release_lease(self, name: str, owner: str) -> None:
        script = self._scripts["release"]
        key = f"{self.prefix}:wr:lease:{name}"
        await self.guard.background("release", lambda: script([key], [owner]))

    async def warm_up(self) -> None:
        """Load every script now (on every primary of a cluster; the lean connections open
        too), so that no request's deadline is spent on it. Raises :class:`StorageError`."""
        for script in self._scripts.values():
            try:
                script.sha = await script._load()
            except (RedisError, OSError) as exc:
                raise StorageError(f"waiting room store: loading scripts failed: {exc}") from exc
        if self._lean is not None:
            await self._lean.open_all()

    async def aclose(self) -> None:
        if self._lean is not None:
            self._lean.close()
        if self._owns:
            await self.redis.aclose()
