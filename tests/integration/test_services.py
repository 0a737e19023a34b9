"""The suite's services: the configured ones when they answer, private servers when they do not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from gatekeeper.persistence.testing import scratch_database
from tests.probes import amqp_answers, nats_answers, postgres_answers, redis_answers
from tests.servers import free_port
from tests.services import SERVICES, Provider


def _provider(environ: dict[str, str]) -> Provider:
    """A provider of the services ``environ`` configures, independent of the session's."""
    return Provider({k: s for k, s in SERVICES.items() if s.variable in environ}, environ)


async def test_dead_redis_and_postgres_are_replaced_by_private_ones_that_go_away() -> None:
    """Nothing answers at the configured Redis and PostgreSQL URLs: the provider starts private
    servers that work (a write, a migrated schema), says so in one line, and stop() removes them."""
    dead = {
        "GATEKEEPER_TEST_REDIS_URL": f"redis://127.0.0.1:{free_port()}/15",
        "GATEKEEPER_TEST_POSTGRES_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test",
    }
    environ = dict(dead)
    provider = _provider(environ)
    try:
        await asyncio.to_thread(provider.resolve)
        redis_url, postgres_url = provider.url("redis"), provider.url("postgres")
        assert redis_url not in dead.values()
        assert postgres_url not in dead.values()
        assert environ == {
            "GATEKEEPER_TEST_REDIS_URL": redis_url,
            "GATEKEEPER_TEST_POSTGRES_URL": postgres_url,
        }
        client = redis.Redis.from_url(redis_url)
        try:
            client.set("provider-test", b"written")
            assert client.get("provider-test") == b"written"
        finally:
            client.close()
        async with scratch_database(postgres_url) as db, db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM tiers"))).scalar_one() > 0
        line = provider.announcement()
        assert line is not None
        assert "\n" not in line
        assert redis_url in line
        assert postgres_url in line
        folders = [Path(server.dir) for server in provider.private.values()]
        assert len(folders) == 2
        assert all(folder.is_dir() for folder in folders)
    finally:
        await asyncio.to_thread(provider.stop)
    assert redis_answers(redis_url) is not None
    assert postgres_answers(postgres_url) is not None
    assert not any(folder.exists() for folder in folders)


@pytest.mark.slow
async def test_dead_rabbitmq_and_nats_are_replaced_by_private_ones_that_go_away() -> None:
    """Nothing answers at the configured AMQP and NATS URLs: the provider starts a private
    RabbitMQ node and a NATS server with JetStream, and stop() removes both."""
    environ = {
        "GATEKEEPER_TEST_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        "GATEKEEPER_TEST_NATS_URL": f"nats://127.0.0.1:{free_port()}",
    }
    dead = dict(environ)
    provider = _provider(environ)
    try:
        await asyncio.to_thread(provider.resolve)
        amqp_url, nats_url = provider.url("amqp"), provider.url("nats")
        assert amqp_url not in dead.values()
        assert nats_url not in dead.values()
        assert amqp_answers(amqp_url) is None
        assert nats_answers(nats_url) is None  # JetStream included
        folders = [Path(server.dir) for server in provider.private.values()]
    finally:
        await asyncio.to_thread(provider.stop)
    assert amqp_answers(amqp_url) is not None
    assert nats_answers(nats_url) is not None
    assert not any(folder.exists() for folder in folders)


def test_services_that_answer_are_used_and_nothing_is_started(
    redis_url: str, postgres_url: str
) -> None:
    """Where the configured Redis and PostgreSQL answer, their URLs are kept, nothing private
    starts and nothing is announced."""
    environ = {"GATEKEEPER_TEST_REDIS_URL": redis_url, "GATEKEEPER_TEST_POSTGRES_URL": postgres_url}
    provider = _provider(environ)
    try:
        provider.resolve()
        assert (provider.url("redis"), provider.url("postgres")) == (redis_url, postgres_url)
        assert provider.private == {}
        assert provider.announcement() is None
    finally:
        provider.stop()


def test_a_missing_server_program_fails_every_test_that_needs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No Redis answers and redis-server is not installed: asking for the Redis raises an error
    naming the URL and how to install the program (no skip), and the announcement says so."""
    monkeypatch.setenv("PATH", str(tmp_path))  # redis-server lives in /usr/bin
    dead = f"redis://127.0.0.1:{free_port()}/15"
    provider = _provider({"GATEKEEPER_TEST_REDIS_URL": dead})
    provider.resolve()
    with pytest.raises(RuntimeError, match=r"redis-server is not installed: `make test` installs"):
        provider.url("redis")
    assert f"Redis FAILED to start ({dead}" in (provider.announcement() or "")
