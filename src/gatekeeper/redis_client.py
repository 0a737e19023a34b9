"""Every Redis client of Gatekeeper is built here, from one URL.

=====================================  ===================================================
URL                                    client
=====================================  ===================================================
``redis://h:p/0``, ``rediss://``,      ``redis.asyncio.Redis`` (redis-py parses the URL)
``unix:///path``
``redis+cluster://h1:p1,h2:p2``,       ``redis.asyncio.RedisCluster``: any reachable node
``rediss+cluster://...``               gives the slot map; MOVED, ASK, TRYAGAIN and failover
                                       are redis-py's cluster client's business
``redis+sentinel://h1:p1,h2:p2/name``  the master that the sentinels name
=====================================  ===================================================

A cluster URL takes the password in its netloc (``redis+cluster://:secret@h1:p1,h2:p2``) and
typed options in its query string (``?socket_timeout=0.5&username=gk``); the limit store's own
``prefix`` option is ignored here. Nothing connects until first use; :func:`warm_up` connects
to every node ahead of traffic (see ``docs/redis-cluster.md``).

Keys of one multi-key command or script must share a hash tag (``{...}``): on a cluster they
must live in one slot, and on one Redis a tag is just part of the name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gatekeeper.errors import ConfigurationError, StorageError, StorageTimeout

__all__ = [
    "CLUSTER_SCHEMES",
    "cluster_client",
    "is_cluster",
    "is_cluster_url",
    "parse_hosts",
    "pubsub",
    "redis_from_url",
    "redis_options",
    "sentinel_master",
    "translate_redis_errors",
    "warm_up",
]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_PLAIN_SCHEMES = ("redis", "rediss", "unix")

# Query-string options passed on to redis-py, with their types.
_FLOAT_OPTIONS = ("socket_timeout", "socket_connect_timeout", "health_check_interval")
_INT_OPTIONS = ("max_connections", "db")
_STR_OPTIONS = ("username", "password", "client_name", "ssl_cert_reqs", "ssl_ca_certs")


def redis_options(url: str, query: dict[str, str], options: dict[str, Any]) -> dict[str, Any]:
    """redis-py keyword arguments from the URL's query string (typed) and the caller's own.

    Unknown query options raise :class:`ConfigurationError` naming them.
    """
    out = dict(options)
    for name, value in query.items():
        try:
            if name in _FLOAT_OPTIONS:
                out[name] = float(value)
            elif name in _INT_OPTIONS:
                out[name] = int(value)
            elif name in _STR_OPTIONS:
                out[name] = value
            else:
                known = ", ".join(sorted((*_FLOAT_OPTIONS, *_INT_OPTIONS, *_STR_OPTIONS, "prefix")))
                raise ConfigurationError(
                    f"storage URL {url!r}: unknown option {name!r} (known: {known})"
                )
        except ValueError as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(
                f"storage URL {url!r}: option {name}={value!r} is not a number"
            ) from exc
    return out


def parse_hosts(url: str, netloc: str) -> tuple[list[tuple[str, int]], str | None]:
    """``user:pass@h1:p1,h2:p2`` -> ``([(h1, p1), (h2, p2)], password)``."""
    auth, _, hosts = netloc.rpartition("@")
    password = auth.partition(":")[2] or None if auth else None
    out = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"storage URL {url!r}: {item!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    return out, password


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is redis-py's cluster client."""
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def redis_from_url(url: str, **options: Any) -> Any:
    """The client ``url`` names (see the module docstring); ``options`` go to redis-py.

    Raises :class:`ConfigurationError` naming the URL when it is malformed. Lazy: nothing
    connects here.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"Redis URL {url!r} is malformed: expected scheme://...")
    try:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
    except ValueError as exc:
        raise ConfigurationError(f"Redis URL {url!r} is malformed: {exc}") from exc
    scheme = parts.scheme.lower()
    query.pop("prefix", None)  # the limit store's option: the same URL serves both
    if scheme in _PLAIN_SCHEMES:
        from redis.asyncio import Redis

        if "prefix" in parts.query:  # redis-py would pass it to every connection: TypeError
            kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
            url = urlunsplit(parts._replace(query=urlencode([i for i in kept if i[0] != "prefix"])))
        try:
            return Redis.from_url(url, **options)
        except ValueError as exc:
            raise ConfigurationError(f"Redis URL {url!r}: {exc}") from exc
    if scheme in CLUSTER_SCHEMES:
        return cluster_client(url, parts.netloc, query, tls=scheme == "rediss+cluster", **options)
    if scheme == "redis+sentinel":
        # (The sentinels' own connections are not closed with the master's client: they
        # live as long as the process, like the shared client itself.)
        return sentinel_master(url, parts.netloc, parts.path, query, **options)[1]
    raise ConfigurationError(
        f"Redis URL {url!r}: unknown scheme {parts.scheme!r} (use redis, rediss, unix, "
        "redis+cluster, rediss+cluster or redis+sentinel)"
    )


def cluster_client(
    url: str, netloc: str, query: dict[str, str], *, tls: bool = False, **options: Any
) -> Any:
    """A ``RedisCluster`` through the nodes ``netloc`` lists (``h1:p1,h2:p2``)."""
    from redis.asyncio.cluster import ClusterNode

    if not netloc:
        raise ConfigurationError(f"Redis URL {url!r} names no host")
    hosts, password = parse_hosts(url, netloc)
    kwargs = redis_options(url, query, options)
    if password is not None:
        kwargs.setdefault("password", password)
    if kwargs.pop("db", 0):
        raise ConfigurationError(f"Redis URL {url!r}: a cluster has only database 0")
    if tls:
        kwargs["ssl"] = True
    nodes = [ClusterNode(host, port) for host, port in hosts]
    return _cluster_class()(startup_nodes=nodes, **kwargs)


@functools.cache
def _cluster_class() -> Any:
    from redis.asyncio.cluster import RedisCluster

    class Cluster(RedisCluster):
        """redis-py's cluster client, initialised before a command runs.

        Commands that arrive together at a client that has not read its slot map yet (a burst
        on a fresh client, or after redis-py marked the map stale) sometimes failed with an
        ``AttributeError`` inside redis-py 8.1 (a connection used while being reset: 6 bursts
        of 20 in 8 here). Reading the map first, under redis-py's own lock, avoids it
        (``tests/integration/test_redis_client.py``).
        """

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            if getattr(self, "_initialize", False):
                await self.initialize()
            return await super().execute_command(*args, **kwargs)

    return Cluster


def sentinel_master(
    url: str, netloc: str, path: str, query: dict[str, str], **options: Any
) -> tuple[Any, Any]:
    """``(sentinel, master client)`` for ``redis+sentinel://h1:p1,h2:p2/<master name>``."""
    from redis.asyncio import Redis
    from redis.asyncio.sentinel import Sentinel

    hosts, password = parse_hosts(url, netloc)
    service = path.strip("/")
    if not service:
        raise ConfigurationError(f"Redis URL {url!r}: name the master, e.g. /mymaster")
    kwargs = redis_options(url, query, options)
    if password is not None:
        kwargs.setdefault("password", password)
    timeouts = {
        k: v for k, v in kwargs.items() if k in ("socket_timeout", "socket_connect_timeout")
    }
    sentinel = Sentinel(hosts, sentinel_kwargs=timeouts, **kwargs)  # type: ignore[no-untyped-call]
    return sentinel, sentinel.master_for(service, redis_class=Redis)


@contextlib.contextmanager
def translate_redis_errors(action: str) -> Iterator[None]:
    """redis-py's and the socket's errors as :class:`StorageError` (``StorageTimeout`` for a
    timeout), naming ``action``: the edge where components stop seeing redis-py (a node of a
    cluster that is down answers 503 ``storage_unavailable``, never a 500)."""
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeout

    try:
        yield
    except (RedisTimeout, TimeoutError) as exc:
        raise StorageTimeout(f"{action}: Redis did not answer in time") from exc
    except (RedisError, OSError) as exc:
        raise StorageError(f"{action}: {type(exc).__name__}: {exc}") from exc


async def pubsub(client: Any, *, refresh: bool = False, **options: Any) -> Any:
    """A pub/sub object of ``client``. On a cluster, classic pub/sub messages reach every node,
    so one connection to the node of the channel's slot hears them all; the slot map must be
    known first (``refresh``: read it again, after that node failed)."""
    if is_cluster(client):
        if refresh:
            await client.nodes_manager.initialize()
        else:
            await client.initialize()
    return client.pubsub(**options)


async def warm_up(
    client: Any, scripts: Iterable[str | bytes] = (), *, connections: int = 4
) -> None:
    """Connect ahead of traffic: ``connections`` connections to every primary (to the one
    server of a plain client) and the ``scripts`` loaded there, so that a request's deadline
    is never spent on connecting or on ``SCRIPT LOAD``. Raises redis-py's errors."""
    if is_cluster(client):
        await client.initialize()
        nodes = client.get_primaries()
        for text in scripts:
            for node in nodes:
                await node.execute_command("SCRIPT", "LOAD", text)
        calls = [node.execute_command("PING") for node in nodes for _ in range(connections)]
        await asyncio.gather(*calls)
        return
    for text in scripts:
        await client.script_load(text)
    await asyncio.gather(*(client.ping() for _ in range(connections)))
