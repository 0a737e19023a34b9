"""The limiter on one Redis against the same on a Redis Cluster, in ONE run.

Rows: ``one redis`` (``GATEKEEPER_BENCH_REDIS_URL``: the lean pipelined client) is the
baseline; ``cluster`` is a Redis Cluster of 3 masters with a replica each
(``GATEKEEPER_BENCH_CLUSTER_URL``, else a private one started on this machine, as the tests'
``tests/cluster.py`` does), where decisions go through redis-py's cluster client, one script
call per node per batch.

Each round: 64 concurrent callers, each awaiting ``limiter.hit(policy, key)`` in a loop over
1,000 keys (spread over every node of the cluster), token bucket, limits far above the load so
that every hit debits. Columns: decisions/s (median over rounds), the ratio to one Redis, this
process's CPU us per decision, p50 and p99 of one decision's latency in ms (the limiter's
deadline is 20 ms: the p99 says how much of it a loaded machine leaves), and the 1-minute load
average when the row was measured (the machine is shared: read the numbers with it).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from statistics import median, quantiles

from bench.report import Report
from gatekeeper.limits import Limiter, Policy, storage_from_url

REDIS_URL = os.environ.get(
    "GATEKEEPER_BENCH_REDIS_URL",
    os.environ.get("GATEKEEPER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
)
CALLERS = 64
KEYS = [f"ip:10.{i // 256}.{i % 256}.1" for i in range(1_000)]


async def _round(url: str, decisions: int) -> tuple[float, float, list[float]]:
    """(decisions/s, CPU us per decision, latencies in ms) of one round on a fresh limiter."""
    storage = storage_from_url(url, prefix=f"bench-{uuid.uuid4().hex[:8]}")
    limiter = Limiter(storage, deadline=1.0)  # measured, not cut: a timeout would flatter
    policy = Policy("bench-cluster", "1000000/minute")
    await storage.warm_up(8)  # type: ignore[attr-defined]
    latencies: list[float] = []
    per_caller = decisions // CALLERS

    async def caller(offset: int) -> None:
        for i in range(per_caller):
            started = time.perf_counter()
            await limiter.hit(policy, KEYS[(offset + i) % len(KEYS)])
            latencies.append((time.perf_counter() - started) * 1000)

    try:
        await asyncio.gather(*(caller(c * 17) for c in range(CALLERS // 8)))  # warm
        latencies.clear()
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller(c * 17) for c in range(CALLERS)))
        wall = time.perf_counter() - wall_before
        cpu = time.process_time() - cpu_before
    finally:
        await limiter.aclose()
    done = per_caller * CALLERS
    return done / wall, cpu / done * 1e6, latencies


def _cluster_url() -> tuple[str, Callable[[], None] | None]:
    url = os.environ.get("GATEKEEPER_BENCH_CLUSTER_URL")
    if url:
        return url, None
    from tests.cluster import RedisClusterServers  # the tests' private cluster, reused

    servers = RedisClusterServers()
    servers.start()
    return servers.url, servers.stop


def run(quick: bool) -> Report:
    rounds, decisions = (1, 6_400) if quick else (5, 64_000)
    report = Report(
        "cluster",
        ["store", "decisions_per_s", "x_one_redis", "cpu_us", "p50_ms", "p99_ms", "load_1m"],
    )
    cluster_url, stop = _cluster_url()
    try:
        baseline = 0.0
        for name, url in (("one redis (lean)", REDIS_URL), ("cluster 3x2", cluster_url)):
            results = [asyncio.run(_round(url, decisions)) for _ in range(rounds)]
            rate = median(r[0] for r in results)
            baseline = baseline or rate
            latencies = sorted(x for r in results for x in r[2])
            cuts = quantiles(latencies, n=100)
            report.add(
                store=name,
                decisions_per_s=rate,
                x_one_redis=rate / baseline,
                cpu_us=median(r[1] for r in results),
                p50_ms=cuts[49],
                p99_ms=cuts[98],
                load_1m=os.getloadavg()[0],
            )
    finally:
        if stop is not None:
            stop()
    report.meta["rounds"] = rounds
    report.meta["decisions_per_round"] = decisions
    return report
