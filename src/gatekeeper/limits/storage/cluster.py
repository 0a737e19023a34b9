"""The Redis Cluster store: one script call per node per batch.

Keys hash-tag the subject, so all policies of one subject live on one node. A batch is split by
node: the groups whose keys all live on one node go to that node in one ``EVALSHA`` (the script
declares ``allow-cross-slot-keys``, so one call may touch several slots of its node; the keys
travel in ``ARGV`` because a node refuses declared ``KEYS`` of several slots), and those calls
run concurrently. A group spanning nodes splits the batch there, so groups still apply in
order. After a resharding or failover a node answers MOVED/ASK (before the
script runs, so nothing was debited): the store refreshes its slot map and sends that node's
part again. A node that does not answer at all (a killed master) fails its calls (the
policies' failure modes answer) and makes the store read the slot map again in the background,
every half second, and warm the primaries it names up: once the cluster has promoted the
master's replica, decisions go there without a restart.

A group whose checks live on different nodes (say, per IP and per API key) cannot be atomic.
It is decided by *reserve-then-compensate*: each node's part is debited in a fixed order (by
node name); if one part denies, the parts already debited are refunded (``lua/refund.lua``)
and the rest is only peeked. Between the debit and the refund another request may see the
reserved units as taken, and a refund lost to a network failure stays debited until the state
resets: such groups are exact only up to that window. Keep the policies of one request on one
subject (or accept that limitation) where exactness matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster

from gatekeeper.errors import StorageError, StorageTimeout
from gatekeeper.limits.algorithms import lease_members
from gatekeeper.limits.decision import PolicyResult
from gatekeeper.limits.policy import Algorithm, Check
from gatekeeper.limits.storage._resp import (
    LeanPool,
    ReplyError,
    command,
    evalsha,
    lean_pool_from,
)
from gatekeeper.limits.storage._script import (
    Encoder,
    Script,
    decode,
    load_script,
    translate_errors,
)
from gatekeeper.redis_client import warm_up

__all__ = ["RedisClusterStorage"]

logger = logging.getLogger("gatekeeper.limits.cluster")

_REDIRECTS = (
    redis_errors.MovedError,
    redis_errors.AskError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.SlotNotCoveredError,
)
_MAX_REDIRECTS = 3
# A node that does not answer (killed, partitioned) may have been replaced by its replica: the
# slot map is read again in the background, at most this often (seconds).
_REFRESH_EVERY = 0.5
_UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


# Error replies of a node, as the exceptions redis-py raises for them (the redirect handling
# and the error translation below are written against those).
_REPLY_ERRORS: tuple[tuple[str, type[redis_errors.RedisError]], ...] = (
    ("MOVED ", redis_errors.MovedError),
    ("ASK ", redis_errors.AskError),
    ("TRYAGAIN", redis_errors.TryAgainError),
    ("CLUSTERDOWN", redis_errors.ClusterDownError),
)


async def _lean_eval(pool: LeanPool, script: Script, keys: list[str], args: list[Any]) -> Any:
    """``EVALSHA`` over a node's lean pool, loading the script once on NOSCRIPT; error replies
    and lost connections raised as redis-py's exceptions."""
    payload = evalsha(script.sha, keys, args)
    try:
        reply = await pool.call(payload)
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            loaded = await pool.call(command(b"SCRIPT", b"LOAD", script.text))
            if isinstance(loaded, ReplyError):
                raise redis_errors.ResponseError(f"loading the script failed: {loaded}")
            reply = await pool.call(payload)
    except StorageTimeout as exc:
        raise redis_errors.TimeoutError(str(exc)) from exc
    except StorageError as exc:  # the lean client's connection errors
        raise redis_errors.ConnectionError(str(exc)) from exc
    if isinstance(reply, ReplyError):
        message = str(reply)
        for prefix, error in _REPLY_ERRORS:
            if message.startswith(prefix):
                raise error(message.removeprefix("MOVED ").removeprefix("ASK "))
        raise redis_errors.ResponseError(message)
    return reply


class RedisClusterStorage:
    """A :class:`~gatekeeper.types.Storage` on a Redis Cluster (``redis+cluster://``)."""

    def __init__(
        self,
        client: RedisCluster,
        *,
        prefix: str = "gk",
        owns_client: bool = True,
        lean: bool = True,
    ):
        """``lean``: send the decide and refund scripts over a lean pipelined pool per node
        (plain TCP only; TLS stays with redis-py), about a third of redis-py's CPU per call."""
        self.client = client
        self._lean: dict[str, LeanPool] | None = {} if lean else None
        self.prefix = prefix
        self._owns_client = owns_client
        self._encoder = Encoder(prefix)
        self._decide_script = load_script("decide")
        self._refund = load_script("refund")
        self._ready = False
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at = float("-inf")

    @classmethod
    def from_hosts(
        cls, hosts: Sequence[tuple[str, int]], *, prefix: str = "gk", **options: Any
    ) -> RedisClusterStorage:
        """Connect (lazily) through any of the given nodes."""
        nodes = [ClusterNode(host, port) for host, port in hosts]
        return cls(RedisCluster(startup_nodes=nodes, **options), prefix=prefix)

    async def _ensure_ready(self, refresh: bool = False) -> None:
        with translate_errors("reading the cluster's slot map"):
            if refresh:
                await self.client.nodes_manager.initialize()
            elif not self._ready:
                await self.client.initialize()
                self._ready = True

    def _node(self, check: Check) -> ClusterNode:
        node = self.client.get_node_from_key(self._encoder.key(check))
        if node is None:  # pragma: no cover - only asked for primaries
            raise StorageError(f"no cluster node serves {check.key!r}")
        return node

    def _lean_pool(self, node: ClusterNode) -> LeanPool | None:
        """The node's lean pool (created on first use), or None off plain TCP (TLS)."""
        if self._lean is None:
            return None
        pool = self._lean.get(node.name)
        if pool is None:
            pool = lean_pool_from(node.connection_class, node.connection_kwargs)
            if pool is None:
                self._lean = None  # every node of a cluster speaks alike
                return None
            self._lean[node.name] = pool
        return pool

    async def _eval(
        self, node: ClusterNode, script: Script, keys: list[str], args: list[Any]
    ) -> Any:
        pool = self._lean_pool(node)
        if pool is not None:
            return await _lean_eval(pool, script, keys, args)
        try:
            return await node.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            await node.execute_command("SCRIPT", "LOAD", script.text)
            return await node.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    async def decide(
        self, groups: Sequence[Sequence[Check]], now_us: int | None = None
    ) -> list[list[PolicyResult]]:
        """Decide a batch: one call per node, cross-node groups by reserve-then-compensate."""
        if not groups:
            return []
        await self._ensure_ready()
        with translate_errors("deciding limits"):
            try:
                return await self._decide(groups, now_us, 0)
            except _UNREACHABLE:
                self._refresh_soon()
                raise

    def _refresh_soon(self) -> None:
        """After a node failed to answer: read the slot map again and warm the primaries up,
        in the background (no request's deadline waits for it), so that a promoted replica
        takes over without a restart. At most every ``_REFRESH_EVERY`` seconds."""
        now = time.monotonic()
        busy = self._refreshing is not None and not self._refreshing.done()
        if busy or now - self._refreshed_at < _REFRESH_EVERY:
            return
        self._refreshed_at = now
        self._refreshing = asyncio.create_task(self._refresh(), name="cluster-slot-map-refresh")

    async def _refresh(self) -> None:
        try:
            await self.client.nodes_manager.initialize()
            await self.warm_up()
        except Exception as exc:  # the next failed call tries again
            logger.info("cluster slot map refresh failed: %s", exc)

    async def _decide(
        self, groups: Sequence[Sequence[Check]], now_us: int | None, depth: int
    ) -> list[list[PolicyResult]]:
        results: list[list[PolicyResult] | None] = [None] * len(groups)
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}

        async def on_node(node: ClusterNode, indexes: list[int]) -> None:
            part = [groups[i] for i in indexes]
            keys, args = self._encoder.encode(part, now_us, keys_in_argv=True)
            try:
                flat = await self._eval(node, self._decide_script, keys, args)
            except _REDIRECTS:
                # The node refused before running the script: refresh the map and resend.
                if depth >= _MAX_REDIRECTS:
                    raise
                await self._ensure_ready(refresh=True)
                decided = await self._decide(part, now_us, depth + 1)
            else:
                decided = decode(part, flat)
            for i, result in zip(indexes, decided, strict=True):
                results[i] = result

        async def flush() -> None:
            # Pending groups of different nodes touch different keys: their calls can run
            # concurrently without changing what "in order" means.
            await asyncio.gather(*(on_node(node, idx) for node, idx in by_node.values()))
            by_node.clear()

        for index, group in enumerate(groups):
            nodes = {node.name: node for node in map(self._node, group)}
            if len(nodes) > 1:
                # A group across nodes needs several round trips; the groups before it must
                # be decided first to keep the batch's order.
                await flush()
                results[index] = await self._reserve(group, now_us)
            elif nodes:
                node = next(iter(nodes.values()))
                by_node.setdefault(node.name, (node, []))[1].append(index)
            else:
                results[index] = []
        await flush()
        return [r if r is not None else [] for r in results]

    async def _reserve(self, group: Sequence[Check], now_us: int | None) -> list[PolicyResult]:
        """Reserve-then-compensate for one group whose checks live on several nodes."""
        parts: dict[str, tuple[ClusterNode, list[int]]] = {}
        for i, check in enumerate(group):
            node = self._node(check)
            parts.setdefault(node.name, (node, []))[1].append(i)
        out: list[PolicyResult | None] = [None] * len(group)
        debited: list[tuple[ClusterNode, list[int], int]] = []
        denied = False
        for name in sorted(parts):
            node, indexes = parts[name]
            checks = [group[i] for i in indexes]
            keys, args = self._encoder.encode([checks], now_us, peek_all=denied, keys_in_argv=True)
            flat = await self._eval(node, self._decide_script, keys, args)
            decided = decode([checks], flat)[0]
            for i, result in zip(indexes, decided, strict=True):
                out[i] = result
            if not denied and any(not r.allowed and not r.shadow for r in decided):
                denied = True
                for done_node, done_indexes, at in debited:
                    await self._give_back(done_node, [group[i] for i in done_indexes], at)
                    # Report the refunded parts as they now are.
                    again = [group[i] for i in done_indexes]
                    keys, args = self._encoder.encode(
                        [again], now_us, peek_all=True, keys_in_argv=True
                    )
                    flat2 = await self._eval(done_node, self._decide_script, keys, args)
                    for i, result in zip(done_indexes, decode([again], flat2)[0], strict=True):
                        out[i] = result
            elif not denied:
                debited.append((node, indexes, int(flat[0])))
        return [r for r in out if r is not None]

    async def _give_back(self, node: ClusterNode, checks: list[Check], at: int) -> None:
        taken = [c for c in checks if not c.peek and c.cost > 0]
        if not taken:
            return
        keys = [self._encoder.key(c) for c in taken]
        args: list[Any] = [at, len(keys), *keys]
        for check in taken:
            args.extend(self._encoder.fields(check.policy))
            args.extend((check.cost, 0, check.lease_id or ""))
        await self._eval(node, self._refund, keys[:1], args)

    async def warm_up(self, connections: int = 4) -> None:
        """Read the slot map, open ``connections`` connections to every primary and load both
        scripts on each: a fresh replica's first decisions on any node find everything ready
        (see :class:`~gatekeeper.types.WarmUp`)."""
        await self._ensure_ready()
        scripts = (self._decide_script.text, self._refund.text)
        with translate_errors("warming up"):
            await warm_up(self.client, scripts, connections=connections)
        primaries = self.client.get_primaries()
        if self._lean is not None:
            # Pools of nodes that are no longer primaries (a failed master) are closed.
            names = {node.name for node in primaries}
            for name in [n for n in self._lean if n not in names]:
                self._lean.pop(name).close()
        for node in primaries:
            pool = self._lean_pool(node)
            if pool is not None:
                await pool.open_all()

    async def release(self, checks: Sequence[Check], lease_id: str) -> None:
        """Give back the concurrency slots that ``lease_id`` holds on these checks' keys."""
        with translate_errors("releasing leases"):
            for check in checks:
                if check.policy.algorithm is Algorithm.CONCURRENCY:
                    members = lease_members(lease_id, check.cost or 1)
                    await self.client.zrem(self._encoder.key(check), *members)

    async def reset(self, checks: Sequence[Check]) -> None:
        """Delete the keys of these checks (one command per key: they span slots)."""
        with translate_errors("resetting limits"):
            for key in {self._encoder.key(c) for c in checks}:
                await self.client.unlink(key)

    async def ping(self) -> None:
        """Raise :class:`~gatekeeper.errors.StorageError` unless every primary answers."""
        await self._ensure_ready()
        with translate_errors("ping"):
            await self.client.ping(target_nodes=RedisCluster.PRIMARIES)

    async def aclose(self) -> None:
        """Close every node's connections (when this store opened the client)."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing
        for pool in (self._lean or {}).values():
            pool.close()
        if self._owns_client:
            with translate_errors("closing"):
                await self.client.aclose()
