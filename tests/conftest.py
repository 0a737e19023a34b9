"""Fixtures shared by every test layer.

Real services: Redis, PostgreSQL, RabbitMQ and NATS at the URLs ``tests.services`` resolves when
the session starts (the configured ones if they answer, private servers otherwise); fixtures
``redis_url``, ``postgres_url``, ``amqp_url`` and ``nats_url`` give them. Tests never flush a
shared database: each test gets its own key prefix (``redis_prefix``) and everything under it is
deleted afterwards, so test runs can share one Redis.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Generator, Iterator

import pytest
import redis.asyncio as aioredis

from gatekeeper.persistence import Database
from gatekeeper.persistence.testing import scratch_database
from gatekeeper.testing import FakeClock
from tests import services
from tests.cluster import RedisClusterServers
from tests.servers import RedisServer

# The Redis deployments every component's integration tests run on: one server and a private
# cluster of 3 masters with a replica each (like the limits library's list of storages).
REDIS_KINDS = [
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("cluster", id="cluster", marks=pytest.mark.redis),
]


@pytest.hookimpl(wrapper=True)
def pytest_sessionstart(session: pytest.Session) -> Generator[None]:
    """After pytest's own start (its header), resolve the services, saying in one line which
    ones are private."""
    yield
    provider = services.session()
    provider.resolve()
    line = provider.announcement()
    if line is not None:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line, yellow=True)
        else:
            print(line, file=sys.stderr)


def pytest_sessionfinish() -> None:
    services.session().stop()


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when the test advances it."""
    return FakeClock()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis (shared: work under ``redis_prefix``)."""
    return services.redis_url()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A private Redis Cluster (3 masters, a replica each) shared by the session's tests: work
    under ``redis_prefix`` and never kill its nodes (failover tests start their own)."""
    servers = RedisClusterServers()
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(params=REDIS_KINDS)
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """The URL of each Redis deployment in turn (``redis://`` then ``redis+cluster://``): a
    test taking it runs on both. Keys go under ``redis_prefix``."""
    if request.param == "redis":
        return services.redis_url()
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    return cluster.url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test PostgreSQL (shared: work in a schema of your own, see ``scratch_database``)."""
    return services.postgres_url()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The test RabbitMQ."""
    return services.amqp_url()


@pytest.fixture(scope="session")
def nats_url() -> str:
    """The test NATS, with JetStream."""
    return services.nats_url()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix unique to this test; its keys are removed when the test ends."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = aioredis.Redis.from_url(services.redis_url())
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
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def sql_database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """A database migrated to head, private to this test: a temporary SQLite file, or a fresh
    schema on the test PostgreSQL (dropped afterwards). Tests using it run on both engines."""
    url = services.postgres_url() if request.param == "postgres" else request.param
    async with scratch_database(url) as db:
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
