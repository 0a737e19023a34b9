"""The cache seams in the real gateway: unsafe methods reach the cache (which invalidates the
URI they changed), and the cache is closed when the gateway shuts down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.gateway.cache.adapter import GatewayCache
from gatekeeper.gateway.cache.memory import MemoryStore
from gatekeeper.gateway.config import parse_config
from gatekeeper.settings import Settings
from gatekeeper.testing import FakeClock
from tests.integration.gateway_fixtures import ADMIN_TOKEN
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
    state = gateway.runtime.snapshot
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


async def test_reload_with_new_cache_settings_closes_the_old_cache(
    origin: Origin, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """A reload that rebuilds the cache (its settings changed) closes the replaced one after
    the shutdown grace (0 here); the new state has a cache of its own."""
    data: dict[str, Any] = {
        "listener": {"shutdown_grace": 0},
        "upstreams": {"origin": {"endpoints": [f"http://127.0.0.1:{origin.port}"]}},
        "routes": [{"name": "cached", "path_prefix": "/", "upstream": "origin", "cache": True}],
        "cache": {"max_object_bytes": 100_000},
    }
    path = tmp_path / "gk.yaml"
    path.write_text(json.dumps(data))
    gateway = Gateway(
        Settings(admin_token=SecretStr(ADMIN_TOKEN)),
        parse_config(data),
        host="127.0.0.1",
        port=0,
        components=(),
        clock=fake_clock,
        config_path=str(path),
    )
    await gateway.start()
    try:
        state = gateway.runtime.snapshot
        assert state is not None
        assert isinstance(state.cache, GatewayCache)
        old_store = state.cache.cache.store
        assert isinstance(old_store, MemoryStore)
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            assert (await http.get("/page")).status_code == 200
            assert len(old_store) > 0
            data["cache"] = {"max_object_bytes": 50_000}
            path.write_text(json.dumps(data))
            reloaded = await http.post(
                "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            assert reloaded.status_code == 200, reloaded.text
        new_state = gateway.runtime.snapshot
        assert new_state is not None
        assert new_state.cache is not state.cache
        for _ in range(100):  # the close runs in a task of its own: let it have its turns
            if len(old_store) == 0:
                break
            await asyncio.sleep(0)
        assert len(old_store) == 0
    finally:
        await gateway.stop()
