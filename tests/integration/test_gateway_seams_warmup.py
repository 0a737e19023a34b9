"""Cold start: a replica warms its limit store up before it accepts traffic, and starts anyway
(failing open as configured) when the store is down."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from gatekeeper.limits.storage._script import load_script
from tests.integration.gateway_fixtures import backends, config_for, running_gateway
from tests.servers import RedisServer

pytestmark = pytest.mark.redis


async def test_start_loads_the_script_and_opens_the_store_connections(
    private_redis: RedisServer,
) -> None:
    """After start, before any request, the decide script is cached in Redis and the limiter's
    pooled connections are open (so the first decisions do not overrun the deadline)."""
    probe = aioredis.Redis.from_url(private_redis.url)
    try:
        sha = load_script("decide").sha
        assert await probe.script_exists(sha) == [False]
        before = len(await probe.client_list())
        async with backends(1) as started:
            data = config_for([started[0].url])
            async with running_gateway(data, redis_url=private_redis.url):
                assert await probe.script_exists(sha) == [True]
                # the probe itself, plus the store's connection(s) opened by the warm-up
                assert len(await probe.client_list()) >= before + 1
    finally:
        await probe.aclose()


async def test_start_with_the_store_down_still_serves(private_redis: RedisServer) -> None:
    """A store that is down at start only logs: the gateway starts and fails open."""
    private_redis.kill()
    async with backends(1) as started:
        data = config_for(
            [started[0].url],
            policies={"p": {"rate": "100/minute"}},
            limiter={"deadline": 0.2},
        )
        data["routes"][0]["limits"] = ["p"]
        async with (
            running_gateway(data, redis_url=private_redis.url) as gateway,
            httpx.AsyncClient(base_url=gateway.url) as http,
        ):
            assert (await http.get("/api/x")).status_code == 200
