"""The waiting room's Redis store over the lean client: script loss and a lost server."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from gatekeeper.errors import StorageError
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.store import TicketState
from gatekeeper.waitingroom.testing import patient_guard
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

T = "shop"


async def test_script_flush_is_recovered_and_nothing_is_enqueued_twice(
    private_redis: RedisServer,
) -> None:
    """After SCRIPT FLUSH the lean call meets NOSCRIPT (nothing ran), loads the script and
    sends once more: the user holds one place, not two."""
    client = aioredis.Redis.from_url(private_redis.url)
    store = RedisStore(client, prefix="lean", lean=True, guard=patient_guard())
    try:
        first = await store.enqueue(T, "alice", 1000.0, 60)
        await client.script_flush()
        second = await store.enqueue(T, "bob", 1000.0, 60)
        again = await store.enqueue(T, "alice", 1000.0, 60)
        assert (first.ticket, second.ticket) == (1, 2)
        assert again.ticket == first.ticket
        assert again.duplicate
        status = await store.status(T, second.ticket, "bob", 1001.0, 60)
        assert status.state is TicketState.QUEUED
        assert status.position == 2
    finally:
        await store.aclose()
        await client.aclose()


async def test_a_dead_server_is_a_storage_error(private_redis: RedisServer) -> None:
    client = aioredis.Redis.from_url(private_redis.url)
    store = RedisStore(client, prefix="lean", lean=True, guard=patient_guard())
    try:
        await store.enqueue(T, "alice", 1000.0, 60)
        private_redis.kill()
        with pytest.raises(StorageError):
            await store.enqueue(T, "bob", 1000.0, 60)
    finally:
        await store.aclose()
        await client.aclose()
