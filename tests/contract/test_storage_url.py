"""storage_from_url: every scheme opens its store; anything malformed is a ConfigurationError."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.storage import MemoryStorage, storage_from_url
from gatekeeper.limits.storage.cluster import RedisClusterStorage
from gatekeeper.limits.storage.redis import RedisStorage


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "malformed"),
        ("localhost:6379", "malformed"),
        ("memcached://127.0.0.1:11211", "unknown scheme 'memcached'"),
        ("memory://?color=blue", "unknown option(s) color"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout='soon' is not a number"),
        ("redis://127.0.0.1:6379/0?flavour=x", "unknown option 'flavour'"),
        ("redis://127.0.0.1:6379/zero", "database number"),
        ("redis://127.0.0.1:port/0", "bad port"),
        ("redis://", "names no host"),
        ("redis+sentinel://127.0.0.1:26379", "name the master"),
        ("redis+sentinel://127.0.0.1/mymaster", "is not host:port"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:x", "is not host:port"),
        ("redis://127.0.0.1:6379/0?prefix={bad}", "prefix"),
    ],
)
def test_malformed_urls_raise_configuration_error(url: str, fragment: str) -> None:
    """Each malformed storage URL is refused with a message naming the problem."""
    with pytest.raises(ConfigurationError) as caught:
        storage_from_url(url)
    assert fragment in str(caught.value)


async def test_schemes_open_their_stores() -> None:
    """memory, redis, rediss, redis+sentinel and redis+cluster open the right class (lazily:
    nothing connects yet)."""
    assert isinstance(storage_from_url("memory://"), MemoryStorage)
    for url in (
        "redis://127.0.0.1:6379/3",
        "rediss://127.0.0.1:6380/0",
        "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster?db=2",
    ):
        store = storage_from_url(url)
        assert isinstance(store, RedisStorage)
        await store.aclose()
    cluster = storage_from_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    assert isinstance(cluster, RedisClusterStorage)
    await cluster.aclose()


async def test_query_options_reach_the_store() -> None:
    """prefix, socket_timeout and max_connections from the query string are applied."""
    store = storage_from_url(
        "redis://127.0.0.1:6379/4?prefix=edge&socket_timeout=0.05&max_connections=64"
    )
    assert isinstance(store, RedisStorage)
    assert store.prefix == "edge"
    pool = store.client.connection_pool
    assert pool.max_connections == 64
    assert pool.connection_kwargs["socket_timeout"] == 0.05
    assert pool.connection_kwargs["db"] == 4
    await store.aclose()


def test_memory_url_takes_the_prefix_keyword() -> None:
    """The prefix keyword is the default; the URL's own prefix wins."""
    assert storage_from_url("memory://", prefix="a").prefix == "a"  # type: ignore[attr-defined]
    store = storage_from_url("memory://?prefix=b", prefix="a")
    assert isinstance(store, MemoryStorage)
    assert store.prefix == "b"
