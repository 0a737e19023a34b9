"""Live statistics shared by several replicas through the real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gatekeeper.errors import StorageError
from gatekeeper.observability.events import LiveStats
from gatekeeper.observability.live_store import RedisLiveStore
from gatekeeper.observability.logging import AccessEntry
from gatekeeper.observability.metrics import Metrics
from gatekeeper.redis_client import redis_from_url
from gatekeeper.testing import FakeClock

pytestmark = pytest.mark.redis


@pytest.fixture
async def client(any_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of each Redis deployment in turn: one server, then a cluster."""
    client = redis_from_url(any_redis_url)
    yield client
    await client.aclose()


def _entry(replica: int, status: int = 200) -> AccessEntry:
    return AccessEntry(
        request_id=f"{replica}", method="GET", path="/api/info", client_ip=f"10.0.0.{replica}",
        status=status, duration=0.003, route="api", upstream="demo" if status != 429 else None,
    )  # fmt: skip


def _serve(live: LiveStats, entry: AccessEntry) -> None:
    live.request(entry.status, entry.upstream, entry.duration)
    live.record(entry)


async def test_four_replicas_add_up_to_cluster_numbers(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    """Four replicas' per-second counters merge in Redis: any replica reads the cluster's sum."""
    clock = FakeClock(2_000.0)
    replicas = [
        LiveStats(clock, RedisLiveStore(client, prefix=f"{redis_prefix}:live"), replica=f"r{i}")
        for i in range(4)
    ]
    for second in range(5):
        for i, live in enumerate(replicas):
            for _ in range(i + 1):  # replica i serves i+1 requests per second
                _serve(live, _entry(i))
            if i == 3:
                _serve(live, _entry(i, 429))
        # Replicas flush at different moments; the sums do not depend on it.
        for live in replicas[second % 2 :: 2]:
            await live.flush()
        clock.advance(1)
    for live in replicas:
        await live.flush()
    views = [await live.snapshot(seconds=10) for live in replicas]
    assert all(view == views[0] for view in views)
    view = views[0]
    assert view["replicas"] == 4
    assert view["totals"]["requests"] == 5 * (1 + 2 + 3 + 4 + 1)
    assert view["traffic"]["rps"] == 11
    assert view["traffic"]["limited_rps"] == 1
    assert view["top_limited_ips"] == [("10.0.0.3", 5)]
    assert len(view["recent"]) == 50


async def test_gauges_sum_queue_depths_and_max_shared_lengths(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    """Admission queue depths add up across replicas; a waiting room's length is not doubled."""
    clock = FakeClock(3_000.0)
    lives = []
    for i, depth in enumerate((3, 4)):
        live = LiveStats(clock, RedisLiveStore(client, prefix=redis_prefix), replica=f"g{i}")
        metrics = Metrics()
        metrics.live = live
        metrics.queue_depth_set("demo", depth)
        metrics.waitingroom_length("shop", 40)
        metrics.waitingroom_admitted("shop", 10)
        await live.flush()
        lives.append(live)
    view = await lives[0].snapshot(seconds=10)
    assert view["queues"] == {"demo": 7}
    assert view["waiting_rooms"]["shop"]["queue_length"] == 40
    assert view["waiting_rooms"]["shop"]["admitted"] == 20
    clock.advance(6)  # both replicas silent past the heartbeat lifetime
    assert (await lives[0].snapshot())["replicas"] == 0


async def test_unreachable_redis_is_a_storage_error() -> None:
    """A dead Redis surfaces as StorageError, and the increments wait for the next flush."""
    dead = aioredis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    live = LiveStats(FakeClock(), RedisLiveStore(dead, prefix="unused"))
    _serve(live, _entry(0))
    with pytest.raises(StorageError):
        await live.flush()
    assert live._pending
    await dead.aclose()
