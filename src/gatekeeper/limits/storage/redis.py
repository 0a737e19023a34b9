"""The Redis store: one atomic Lua call per batch, exact across any number of replicas.

Every batch of groups goes to Redis as ONE ``EVALSHA`` of ``lua/decide.lua``: all checks of all
groups are decided inside one script run, so a group is all-or-nothing and concurrent replicas
can never both take the last token. Redis ``TIME`` inside the script is the clock (not the
replica's). Scripts are loaded once and called by SHA; after a Redis restart or failover the
server answers NOSCRIPT, and the store loads the script again and retries once. On a plain
``redis://`` URL the batches travel over a lean pipelined client (``_resp.py``: hiredis, one
pre-framed buffer per call, about a quarter of redis-py's CPU per decision); every other
command, and TLS, Sentinel and Cluster, go through redis-py.

Keys are ``{prefix}:{subject}:{policy}`` (the subject is the Cluster hash tag) and every key
carries a TTL until its state is fully reset. Errors leave as
:class:`~gatekeeper.errors.StorageError` / :class:`~gatekeeper.errors.StorageTimeout`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from gatekeeper.errors import ConfigurationError, StorageError
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
from gatekeeper.limits.storage._script import Encoder, decode, load_script, translate_errors
from gatekeeper.redis_client import (
    CLUSTER_SCHEMES,
    cluster_client,
    parse_hosts,
    redis_options,
    sentinel_master,
)
from gatekeeper.types import Clock, Storage

__all__ = [
    "RedisStorage",
    "lean_pool_for",
    "parse_hosts",
    "redis_options",
    "redis_storage_from_url",
]


class RedisStorage:
    """A :class:`~gatekeeper.types.Storage` on one Redis (or the master Sentinel names).

    ``client`` is a ``redis.asyncio.Redis`` with ``decode_responses=False``; the store closes it
    in :meth:`aclose` when ``owns_client`` is true. ``lean``, a :class:`LeanPool` to the same
    server, carries the decide calls instead of ``client`` (the store closes it).
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "gk",
        owns_client: bool = True,
        sentinel: Sentinel | None = None,
        lean: LeanPool | None = None,
    ) -> None:
        self.client = client
        self.lean = lean
        self.prefix = prefix
        self._owns_client = owns_client
        self._sentinel = sentinel
        self._encoder = Encoder(prefix)
        self._decide = load_script("decide")

    async def decide(
        self, groups: Sequence[Sequence[Check]], now_us: int | None = None
    ) -> list[list[PolicyResult]]:
        """Decide a batch of groups in one script call (see :class:`~gatekeeper.types.Storage`)."""
        if not groups:
            return []
        keys, args = self._encoder.encode(groups, now_us)
        if self.lean is not None:
            flat = await self._lean_evalsha(self.lean, keys, args)
        else:
            flat = await self._evalsha(keys, args)
        return decode(groups, flat)

    def decide_soon(
        self, groups: Sequence[Sequence[Check]], now_us: int | None = None
    ) -> asyncio.Future[Any] | None:
        """Send a batch now and return the future of Redis's raw reply, for :meth:`settle`; None
        when this store cannot (no lean connection open yet): use :meth:`decide`.

        The limiter's hot path: no coroutine, no task; the caller bounds the wait itself.
        """
        lean = self.lean
        if lean is None or not groups:
            return None
        keys, args = self._encoder.encode(groups, now_us)
        return lean.send(evalsha(self._decide.sha, keys, args))

    def settle(
        self, groups: Sequence[Sequence[Check]], reply: Any
    ) -> list[list[PolicyResult]] | None:
        """The results of a :meth:`decide_soon` reply; None if Redis lost the script (NOSCRIPT:
        nothing ran, so :meth:`decide` may send the batch again). Raises
        :class:`StorageError` for any other error reply."""
        if isinstance(reply, ReplyError):
            if str(reply).startswith("NOSCRIPT"):
                return None
            raise StorageError(f"deciding limits: Redis answered {reply}")
        return decode(groups, reply)

    async def _lean_evalsha(self, lean: LeanPool, keys: list[str], args: list[Any]) -> list[Any]:
        script = self._decide
        payload = evalsha(script.sha, keys, args)
        reply = await lean.call(payload)
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            # Redis restarted or failed over and lost its script cache: load, retry once.
            loaded = await lean.call(command(b"SCRIPT", b"LOAD", script.text))
            if isinstance(loaded, ReplyError):
                raise StorageError(f"deciding limits: loading the script failed: {loaded}")
            reply = await lean.call(payload)
        if isinstance(reply, ReplyError):
            raise StorageError(f"deciding limits: Redis answered {reply}")
        return reply  # type: ignore[no-any-return]

    async def _evalsha(self, keys: list[str], args: list[Any]) -> list[Any]:
        script = self._decide
        with translate_errors("deciding limits"):
            try:
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)  # type: ignore[no-any-return]
            except redis_errors.NoScriptError:
                # Redis restarted or failed over and lost its script cache: load, retry once.
                await self.client.script_load(script.text)
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)  # type: ignore[no-any-return]

    async def warm_up(self, connections: int = 4) -> None:
        """Open the lean connections and ``connections`` of redis-py's, and load the script
        (see :class:`~gatekeeper.types.WarmUp`)."""
        script = self._decide
        if self.lean is not None:
            await self.lean.open_all()
            loaded = await self.lean.call(command(b"SCRIPT", b"LOAD", script.text))
            if isinstance(loaded, ReplyError):
                raise StorageError(f"loading the limits script failed: {loaded}")
        with translate_errors("warming up"):
            await self.client.script_load(script.text)
            await asyncio.gather(*(self.client.ping() for _ in range(connections)))

    async def release(self, checks: Sequence[Check], lease_id: str) -> None:
        """Give back the concurrency slots that ``lease_id`` holds on these checks' keys."""
        leases = [c for c in checks if c.policy.algorithm is Algorithm.CONCURRENCY]
        if not leases:
            return
        with translate_errors("releasing leases"):
            async with self.client.pipeline(transaction=False) as pipe:
                for check in leases:
                    pipe.zrem(self._encoder.key(check), *lease_members(lease_id, check.cost or 1))
                await pipe.execute()

    async def reset(self, checks: Sequence[Check]) -> None:
        """Delete the keys of these checks."""
        if checks:
            with translate_errors("resetting limits"):
                await self.client.unlink(*{self._encoder.key(c) for c in checks})

    async def ping(self) -> None:
        """Raise :class:`~gatekeeper.errors.StorageError` unless Redis answers."""
        with translate_errors("ping"):
            await self.client.ping()

    async def aclose(self) -> None:
        """Close the connection pool (when this store opened it)."""
        if self.lean is not None:
            self.lean.close()
        if self._owns_client:
            with translate_errors("closing"):
                await self.client.aclose()
                # Sentinel keeps its own connections to the sentinels it asked.
                for client in self._sentinel.sentinels if self._sentinel else ():
                    await client.aclose()


def redis_storage_from_url(
    url: str, *, prefix: str, clock: Clock | None, query: dict[str, str], **options: Any
) -> Storage:
    """Open the Redis store a ``redis://``, ``rediss://``, ``redis+sentinel://``,
    ``redis+cluster://`` or ``rediss+cluster://`` URL names (``clock`` is unused: Redis
    ``TIME`` decides)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    kwargs = redis_options(url, query, options)
    if not parts.netloc:
        raise ConfigurationError(f"storage URL {url!r} names no host")
    if scheme in CLUSTER_SCHEMES:
        from gatekeeper.limits.storage.cluster import RedisClusterStorage

        client = cluster_client(url, parts.netloc, query, tls=scheme == "rediss+cluster", **options)
        return RedisClusterStorage(client, prefix=prefix)
    if scheme == "redis+sentinel":
        sentinel, master = sentinel_master(url, parts.netloc, parts.path, query, **options)
        return RedisStorage(master, prefix=prefix, sentinel=sentinel)
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"storage URL {url!r}: bad port") from exc
    del port
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigurationError(f"storage URL {url!r}: the path must be a database number")
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    client = Redis.from_url(base, **kwargs)
    return RedisStorage(client, prefix=prefix, lean=lean_pool_for(client))


def lean_pool_for(client: Any) -> LeanPool | None:
    """A :class:`LeanPool` to the server a ``redis.asyncio.Redis`` talks to, when it is plain
    TCP (TLS, Unix sockets, Sentinel and Cluster clients stay with redis-py: None)."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return None
    return lean_pool_from(pool.connection_class, pool.connection_kwargs)
