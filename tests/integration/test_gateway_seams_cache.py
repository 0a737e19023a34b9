"""The cache seams in the real gateway: unsafe methods reach the cache (which invalidates the
URI they changed), and the cache is closed when the gateway shuts down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gatekeeper.app import Gateway
from gatekeeper.gateway.cache.adapter import GatewayCache
from gatekeeper.gateway.cache.memory import MemoryStore
from gatekeeper.gateway.config import parse_config
from gatekeeper.settings import Settings
from gatekeeper.testing import FakeClock
from tests.integration.test_cache_origin import Origin


@pytest.fixture
async def origin(fake_clock: FakeClock) -> AsyncIterator[Origin]:
    """An origin answering ``hello`` with ``max-age=60`` to every method."""
    server = Origin(fake_clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _gateway(origin: Origin, clock: FakeClock) -> Gateway:
    config = parse_config(
        {
            "upstreams": {"origin": {"endpoints": [f"http://127.0.0.1:{origin.port}"]}},
            "routes": [{"name": "cached", "path_prefix": "/", "upstream": "origin", "cache": True}],
            "cache": {"max_object_bytes": 100_000},
        }
    )
    return Gateway(Settings(), config, host="127.0.0.1", port=0, components=(), clock=clock)


def _gets(origin: Origin) -> int:
    return sum(1 for seen in origin.seen if seen.method == "GET")


async def test_unsafe_request_invalidates_the_stored_uri(
    origin: Origin, fake_clock: FakeClock
) -> None:
    """GET stored, GET hit; a POST to the same URI is forwarded and makes the next GET miss."""
    gateway = await _gateway(origin, fake_clock).start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            assert (await http.get("/page")).status_code == 200
            assert "hit" in (await http.get("/page")).headers["cache-status"]
            assert _gets(origin) == 1
            posted = await http.post("/page", content=b"x=1")
            assert posted.status_code == 200
            assert [s.method for s in origin.seen] == ["GET", "POST"]
            after = await http.get("/page")
            assert "hit" not in after.headers["cache-status"].split("; ")
            assert _gets(origin) == 2
    finally:
        await gateway.stop()


async def test_shutdown_closes_the_cache(origin: Origin, fake_clock: FakeClock) -> None:
    """After stop() the cache's store is closed (the memory store drops what it held)."""
    gateway = await _gateway(origin, fake_clock).start()
    state = gateway.runtime.state
    assert state is not None
    cache = state.cache
    assert isinstance(cache, GatewayCache)
    store = cache.cache.store
    assert isinstance(store, MemoryStore)
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            assert (await http.get("/page")).status_code == 200
        assert len(store) > 0
    finally:
        await gateway.stop()
    assert len(store) == 0
