"""The Redis client factory (``gatekeeper.redis_client``) against real servers."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.config import parse_config
from gatekeeper.redis_client import is_cluster, redis_from_url, warm_up
from gatekeeper.settings import Settings
from tests.cluster import RedisClusterServers
from tests.integration.gateway_fixtures import config_for

pytestmark = pytest.mark.redis


async def test_a_burst_on_a_fresh_cluster_client_never_fails(
    redis_cluster: RedisClusterServers,
) -> None:
    """8 fresh clients, each hit by 20 concurrent commands at once: all answer (redis-py 8.1's
    own client failed some with an AttributeError when its slot map was not read yet)."""
    for _ in range(8):
        client = redis_from_url(redis_cluster.url)
        assert is_cluster(client)
        try:
            replies = await asyncio.gather(
                *(client.get("gk-test-burst") for _ in range(20)), return_exceptions=True
            )
        finally:
            await client.aclose()
        assert [r for r in replies if isinstance(r, BaseException)] == []


async def test_warm_up_reaches_every_primary(any_redis_url: str) -> None:
    """``warm_up`` loads a script where keys live (every primary of a cluster)."""
    client = redis_from_url(any_redis_url)
    script = "return 'gk-test-warm-up'"
    try:
        await warm_up(client, [script], connections=2)
        sha = await client.script_load(script)  # (the SHA; loading twice is harmless)
        assert await client.script_exists(sha) == [True]
        assert await client.evalsha(sha, 0) == b"gk-test-warm-up"
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://127.0.0.1:7000,nohost", "'nohost' is not host:port"),
        ("redis+cluster://", "names no host"),
        ("redis+cluster://127.0.0.1:7000?db=2", "only database 0"),
        ("redis+cluster://127.0.0.1:7000?colour=red", "unknown option 'colour'"),
        ("http://127.0.0.1:1", "unknown scheme 'http'"),
        ("127.0.0.1:6379", "malformed"),
    ],
)
def test_bad_urls_are_refused_by_name(url: str, says: str) -> None:
    """A malformed Redis URL is a ConfigurationError naming the problem, never redis-py's
    ValueError."""
    with pytest.raises(ConfigurationError, match=says):
        redis_from_url(url)


async def test_the_limit_stores_prefix_option_is_not_passed_to_redis_py(redis_url: str) -> None:
    """``GATEKEEPER_REDIS_URL`` serves the limit store and the shared client: its ``prefix``
    option is the store's, and the shared client still connects (redis-py refused it)."""
    client = redis_from_url(f"{redis_url}{'&' if '?' in redis_url else '?'}prefix=gk-test")
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_plain_url_to_one_node_of_a_cluster_is_called_out(
    redis_cluster: RedisClusterServers, caplog: pytest.LogCaptureFixture
) -> None:
    """``redis://`` naming one node of a cluster (issue 20: limits degraded by MOVED) starts,
    with an error in the log that says to use ``redis+cluster://``; a cluster URL does not."""
    nodes = [f"redis://127.0.0.1:{s.port}/0" for s in redis_cluster.servers[:3]]
    for url, warned in (*((node, True) for node in nodes), (redis_cluster.url, False)):
        caplog.clear()
        settings = Settings(redis_url=url, admin_token=SecretStr("x" * 32))
        data = config_for(["http://127.0.0.1:9"])
        gateway = Gateway(settings, parse_config(data), port=0, components=())
        await gateway.start()
        await gateway.stop()
        assert ("use redis+cluster://" in caplog.text) is warned, url
