"""Exactness across replicas: 4 processes, each with its own pool, Limiter and batcher, hammer
ONE key on the same Redis (or a 3-master Redis Cluster) with many concurrent callers each.

Time is pinned (``now_us``) so nothing refills or slides during the run: whatever the
interleaving of the four processes' batches, exactly ``limit`` hits may be admitted, for every
algorithm. One set of four processes runs all algorithms in turn, meeting at a barrier before
each, so that the processes start every round together.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import uuid

import pytest

from tests import services
from tests.cluster import RedisClusterServers
from tests.integration.replica_worker import ALGORITHMS, LIMIT, REPLICAS, replica_main

pytestmark = pytest.mark.redis


def run_replicas(url: str, prefix: str) -> dict[str, tuple[int, int, list[float]]]:
    """Start the replicas, collect (admitted, degraded, mean batch sizes) per algorithm."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(REPLICAS)
    out = ctx.Queue()
    processes = [
        ctx.Process(target=replica_main, args=(url, prefix, barrier, out, i))
        for i in range(REPLICAS)
    ]
    for process in processes:
        process.start()
    totals: dict[str, tuple[int, int, list[float]]] = {}
    try:
        for _ in range(REPLICAS * len(ALGORITHMS)):
            try:
                _, algorithm, admitted, degraded, batch = out.get(timeout=120)
            except queue.Empty:
                pytest.fail("a replica process did not report in time")
            a, d, batches = totals.get(algorithm, (0, 0, []))
            totals[algorithm] = (a + admitted, d + degraded, [*batches, batch])
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
    assert all(p.exitcode == 0 for p in processes)
    return totals


def assert_exact(totals: dict[str, tuple[int, int, list[float]]]) -> None:
    assert sorted(totals) == sorted(ALGORITHMS)
    for algorithm, (admitted, degraded, _) in totals.items():
        assert degraded == 0, f"{algorithm}: {degraded} degraded decisions"
        assert admitted == LIMIT, f"{algorithm}: admitted {admitted}, limit {LIMIT}"
    # The batcher really coalesced concurrent callers in every replica.
    assert max(max(b) for _, _, b in totals.values()) > 1


@pytest.mark.slow
async def test_four_replicas_admit_exactly_the_limit_on_one_redis(redis_prefix: str) -> None:
    """4 processes x 16 callers on one key of one Redis: admitted == limit, every algorithm."""
    assert_exact(await asyncio.to_thread(run_replicas, services.redis_url(), redis_prefix))


@pytest.fixture
def cluster(redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """The session's private cluster (3 masters, a replica each)."""
    return redis_cluster


@pytest.mark.slow
def test_four_replicas_admit_exactly_the_limit_on_a_redis_cluster(
    cluster: RedisClusterServers,
) -> None:
    """The same on a private Redis Cluster (3 masters, a replica each): admitted == limit,
    every algorithm."""
    assert_exact(run_replicas(cluster.url, f"replicas{uuid.uuid4().hex[:8]}"))
