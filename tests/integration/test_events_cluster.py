"""The Redis outbox on a real 3-master Redis Cluster: every key in the {events} slot, so the
stream, the lease, pipelines and scripts work through a cluster client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from gatekeeper.events.model import Event
from gatekeeper.events.redis_outbox import RedisOutbox
from tests.cluster import RedisClusterServers

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers()
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()


async def test_append_lead_read_ack_and_records_on_a_cluster(cluster: RedisClusterServers) -> None:
    """Two replicas' outboxes on the cluster: events appended by both are read by the leader,
    acknowledged, and the records are shared; the lease is exclusive."""
    first = cluster.url.removeprefix("redis+cluster://").split(",")[0]
    client = RedisCluster.from_url(f"redis://{first}")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    try:
        one, two = RedisOutbox(client, prefix=prefix), RedisOutbox(client, prefix=prefix)
        slots = {client.keyslot(key) for key in one.keys.values()}
        assert len(slots) == 1
        await one.append([Event("test", {"i": i}, 1.7e9, "a") for i in range(3)])
        await two.append([Event("test", {"i": 3}, 1.7e9, "b")])
        assert await one.lead("A", 5)
        assert not await two.lead("B", 5)
        got = await one.read("A", 10, 0.1)
        assert [e.data["i"] for _, e in got] == [0, 1, 2, 3]
        await one.ack([i for i, _ in got])
        await one.record([{"event_id": e.id} for _, e in got])
        assert await two.backlog() == 0
        assert len(await two.deliveries(10)) == 4
        await one.resign("A")
        assert await two.lead("B", 5)
    finally:
        await client.aclose()
