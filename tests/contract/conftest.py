"""One list of storages; every contract test runs on each of them.

``memory`` (with the fake clock), ``redis`` (the shared test Redis, under a per-test prefix)
and ``cluster`` (the session's private Redis Cluster: 3 masters, a replica each).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from gatekeeper.limits.storage import MemoryStorage, storage_from_url
from gatekeeper.testing import FakeClock
from gatekeeper.types import Storage
from tests import services
from tests.cluster import RedisClusterServers

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("cluster", id="cluster", marks=pytest.mark.redis),
]

Opener = Callable[[str], Storage]


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterServers) -> str:
    """The session's private Redis Cluster (3 masters with a replica each)."""
    return redis_cluster.url


async def _drop_prefix(prefix: str) -> None:
    client = aioredis.Redis.from_url(services.redis_url())
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the storage under test."""
    return str(request.param)


@pytest.fixture
def open_storage(request: pytest.FixtureRequest, backend: str) -> Opener:
    """``open_storage(prefix)`` opens a fresh store of this backend under ``prefix``."""
    if backend == "memory":
        return lambda prefix: MemoryStorage(clock=FakeClock(), prefix=prefix)
    if backend == "redis":
        return lambda prefix: storage_from_url(services.redis_url(), prefix=prefix)
    url = request.getfixturevalue("cluster_url")
    return lambda prefix: storage_from_url(url, prefix=prefix)


@pytest.fixture
async def storage(backend: str, open_storage: Opener) -> AsyncIterator[Storage]:
    """A store of this backend with a prefix of this test's own; its keys go afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    store = open_storage(prefix)
    try:
        yield store
    finally:
        await store.aclose()
        if backend == "redis":
            await _drop_prefix(prefix)
