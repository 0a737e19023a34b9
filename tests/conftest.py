"""Fixtures shared by every test layer.

Real services: the Redis at ``GATEKEEPER_TEST_REDIS_URL`` (default db 15 of the local Redis) and
the PostgreSQL at ``GATEKEEPER_TEST_POSTGRES_URL``. Tests never flush a shared database: each test
gets its own key prefix (``redis_prefix``) and everything under it is deleted afterwards, so test
runs can share one Redis.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from gatekeeper.persistence import Database
from gatekeeper.persistence.testing import scratch_database
from gatekeeper.testing import FakeClock
from tests.servers import RedisServer, free_port

REDIS_URL = os.environ.get("GATEKEEPER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "GATEKEEPER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)

__all__ = ["POSTGRES_URL", "REDIS_URL", "free_port"]


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when the test advances it."""
    return FakeClock()


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix unique to this test; its keys are removed when the test ends."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        keys += [k async for k in client.scan_iter(match=f"*{{{prefix}*", count=1000)]
        if keys:
            await client.unlink(*set(keys))
    finally:
        await client.aclose()


@pytest.fixture(
    params=[
        pytest.param("sqlite+aiosqlite://", id="sqlite"),
        pytest.param(POSTGRES_URL, id="postgres", marks=pytest.mark.postgres),
    ]
)
async def sql_database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """A database migrated to head, private to this test: a temporary SQLite file, or a fresh
    schema on the test PostgreSQL (dropped afterwards). Tests using it run on both engines."""
    async with scratch_database(request.param) as db:
        yield db


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own on a free port: safe to kill, pause and restart."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
