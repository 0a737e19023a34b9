"""The lean decide client (storage/_resp.py) against real Redis servers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from gatekeeper.errors import StorageError, StorageTimeout
from gatekeeper.limits.policy import Check, Policy
from gatekeeper.limits.storage import storage_from_url
from gatekeeper.limits.storage._resp import LeanPool, command, evalsha
from gatekeeper.limits.storage.redis import RedisStorage
from tests import services
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

NOW = 1_700_000_000_000_000


@pytest.fixture
def locked_redis() -> Iterator[RedisServer]:
    """A private redis-server that wants a password."""
    server = RedisServer(None, "--requirepass", "s3cret")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_plain_redis_urls_take_the_lean_path_and_tls_does_not() -> None:
    """redis:// decides over the lean client; rediss:// stays on redis-py."""
    plain = storage_from_url("redis://127.0.0.1:6379/3")
    tls = storage_from_url("rediss://127.0.0.1:6379/3")
    assert isinstance(plain, RedisStorage)
    assert isinstance(tls, RedisStorage)
    assert plain.lean is not None
    assert tls.lean is None


def test_evalsha_frames_non_ascii_by_byte_length() -> None:
    """Bulk lengths count UTF-8 bytes, not characters."""
    payload = evalsha("a" * 40, ["k:é"], [7])
    assert payload == b"*5\r\n$7\r\nEVALSHA\r\n$40\r\n" + b"a" * 40 + (
        b"\r\n$1\r\n1\r\n$4\r\nk:\xc3\xa9\r\n$1\r\n7\r\n"
    )


async def test_a_non_ascii_subject_is_decided_under_its_exact_key(redis_prefix: str) -> None:
    """A subject with non-ASCII characters reaches Redis intact (and in the URL's database)."""
    store = storage_from_url(services.redis_url(), prefix=redis_prefix)
    client = aioredis.Redis.from_url(services.redis_url())
    try:
        check = Check(Policy("utf8", "3/minute"), "user:zoë-東京")
        results = [(await store.decide([[check]], NOW))[0][0] for _ in range(4)]
        assert [r.allowed for r in results] == [True, True, True, False]
        assert await client.exists(check.storage_key_in(redis_prefix)) == 1
    finally:
        await client.aclose()
        await store.aclose()


async def test_a_caller_that_gives_up_leaves_the_pipeline_in_step() -> None:
    """A cancelled call's reply is dropped; the next call gets its own reply."""
    host, _, rest = services.redis_url().removeprefix("redis://").partition(":")
    pool = LeanPool(host, int(rest.partition("/")[0]), size=1)
    try:
        first = asyncio.ensure_future(pool.call(command(b"ECHO", b"first")))
        await asyncio.sleep(0)  # connect and write
        await asyncio.sleep(0)
        first.cancel()
        answers = await asyncio.gather(*(pool.call(command(b"ECHO", b"n%d" % i)) for i in range(5)))
        assert answers == [b"n0", b"n1", b"n2", b"n3", b"n4"]
    finally:
        pool.close()


async def test_an_error_reply_becomes_storage_error(redis_prefix: str) -> None:
    """A script error from Redis surfaces as StorageError, and the store goes on serving."""
    store = storage_from_url(services.redis_url(), prefix=redis_prefix)
    assert isinstance(store, RedisStorage)
    assert store.lean is not None
    try:
        with pytest.raises(StorageError, match="Redis answered"):
            await store._lean_evalsha(store.lean, [], ["", "", "", "not-a-number"])
        check = Check(Policy("after-error", "1/minute"), "k")
        assert (await store.decide([[check]], NOW))[0][0].allowed
    finally:
        await store.aclose()


async def test_the_url_password_authenticates_the_lean_connections(
    locked_redis: RedisServer,
) -> None:
    """The URL's password is sent (AUTH) on every lean connection; a wrong one fails cleanly."""
    base = f"127.0.0.1:{locked_redis.port}/0"
    store = storage_from_url(f"redis://:s3cret@{base}")
    wrong = storage_from_url(f"redis://:nope@{base}")
    try:
        assert (await store.decide([[Check(Policy("auth", "1/minute"), "k")]], NOW))[0][0].allowed
        with pytest.raises(StorageError, match="refused connection setup"):
            await wrong.decide([[Check(Policy("auth", "1/minute"), "k")]], NOW)
    finally:
        await store.aclose()
        await wrong.aclose()


async def test_a_killed_redis_fails_waiting_calls_then_reconnects(
    private_redis: RedisServer,
) -> None:
    """Calls waiting on a connection that dies fail with StorageError; the next call after a
    restart opens a new connection and is answered."""
    store = storage_from_url(private_redis.url + "?socket_timeout=5")
    try:
        check = Check(Policy("kill", "5/minute"), "k")
        await store.decide([[check]], NOW)
        private_redis.pause()
        waiting = asyncio.ensure_future(store.decide([[check]], NOW))
        await asyncio.sleep(0.05)
        private_redis.kill()  # SIGKILL ends a stopped process too: it never answers
        with pytest.raises(StorageError) as caught:
            await waiting
        assert not isinstance(caught.value, StorageTimeout)
        private_redis.start()
        assert (await store.decide([[check]], NOW))[0][0].allowed
    finally:
        await store.aclose()


def test_a_store_outlives_its_first_event_loop(redis_prefix: str) -> None:
    """A store used under one event loop and then another opens new connections for the
    second loop instead of writing to the first loop's sockets (and closes those)."""
    store = storage_from_url(services.redis_url(), prefix=redis_prefix)
    check = Check(Policy("loops", "5/minute"), "k")

    async def decide() -> int:
        # Bounded: a reply sent on the first loop's socket would never be read here.
        async with asyncio.timeout(5):
            return (await store.decide([[check]], NOW))[0][0].remaining

    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        assert first.run_until_complete(decide()) == 4
        assert second.run_until_complete(decide()) == 3
        assert second.run_until_complete(decide()) == 2
        first.run_until_complete(asyncio.sleep(0.01))  # let the first loop finish its closes
        second.run_until_complete(store.aclose())
        second.run_until_complete(asyncio.sleep(0.01))
    finally:
        first.close()
        second.close()
