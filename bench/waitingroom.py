"""Waiting room: enqueues/s and status polls/s per process, Redis bytes per queued user.

Everything runs against a private ``redis-server`` started for the run (nothing shared is
touched). Throughput is measured through the service layer (``WaitingRoomService``: tenant
config lookup, token signing/verification, coalesced Lua calls), with 256 concurrent callers in
one process, the per-IP limiter off. The baseline, measured in the same run, is one plain
redis-py ``GET`` per call at the same concurrency: what a design with one round trip per
request could reach at best. Memory is ``INFO memory`` ``used_memory`` before and after
enqueueing N users (1M; 100k with ``--quick``), divided by N.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from bench.report import Report
from gatekeeper.testing import FakeClock
from gatekeeper.waitingroom.config import WaitingRoomSettings
from gatekeeper.waitingroom.config_repository import CachedConfigs, MemoryConfigRepository
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.service import WaitingRoomService
from gatekeeper.waitingroom.tokens import HS256Signer, TokenCodec

CONCURRENCY = 256


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _PrivateRedis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="gk-bench-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("private redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


async def _rate(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Calls/s of ``op(i)`` for i in range(n), CONCURRENCY at a time."""
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await op(i)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
    return n / (time.perf_counter() - started)


async def _throughput(url: str, n: int) -> dict[str, float]:
    client = aioredis.Redis.from_url(url, max_connections=CONCURRENCY + 16)
    store = RedisStore(client, prefix="bench")
    clock = FakeClock()
    wr = WaitingRoomSettings(config_cache_seconds=60)
    configs = CachedConfigs(MemoryConfigRepository(["bench"]), clock, 3600)
    service = WaitingRoomService(
        store, configs, TokenCodec(HS256Signer("b" * 32)), clock, wr, limiter=None
    )
    tokens: list[str] = [""] * n
    try:
        await client.set("bench:k", "v")
        baseline = await _rate(n, lambda i: client.get("bench:k"))

        async def enqueue(i: int) -> None:
            tokens[i] = (await service.enqueue("bench", f"user-{i}")).jwt

        enqueues = await _rate(n, enqueue)
        polls = await _rate(n, lambda i: service.status("bench", tokens[i]))
    finally:
        await client.aclose()
    return {"baseline": baseline, "enqueue": enqueues, "status": polls}


async def _memory(url: str, n: int) -> float:
    client = aioredis.Redis.from_url(url)
    store = RedisStore(client, prefix="mem")
    try:
        before = int((await client.info("memory"))["used_memory"])
        now = 1_700_000_000.0
        chunk = 2000
        for start in range(0, n, chunk):
            await asyncio.gather(
                *(store.enqueue("t", f"user-{i:07d}", now, 60) for i in range(start, start + chunk))
            )
        after = int((await client.info("memory"))["used_memory"])
        queued = (await store.stats("t", now)).queued
        assert queued == n, f"expected {n} queued, found {queued}"
    finally:
        await client.aclose()
    return (after - before) / n


def run(quick: bool) -> Report:
    report = Report(
        "waitingroom",
        ["measure", "value", "unit", "baseline", "ratio"],
        meta={"path": "service layer (no HTTP), private redis-server, 1 process"},
    )
    n = 20_000 if quick else 100_000
    users = 100_000 if quick else 1_000_000
    try:  # the event loop every Gatekeeper process runs (see gateway.server.install_uvloop)
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        report.meta["loop"] = "uvloop"
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        report.meta["loop"] = "asyncio"
    server = _PrivateRedis()
    try:
        rates = asyncio.run(_throughput(server.url, n))
        per_user = asyncio.run(_memory(server.url, users))
    finally:
        server.stop()
        asyncio.set_event_loop_policy(None)
    report.meta["load_average"] = list(os.getloadavg())
    base = rates["baseline"]
    report.add(
        measure="GET round trips (baseline)", value=base, unit="ops/s", baseline=base, ratio=1.0
    )
    for key, label in (("enqueue", "enqueues"), ("status", "status polls")):
        report.add(
            measure=label, value=rates[key], unit="ops/s", baseline=base, ratio=rates[key] / base
        )
    report.add(measure=f"Redis bytes per queued user at {users:,}", value=per_user, unit="B")
    report.target("enqueues/s per process", rates["enqueue"], 10_000)
    report.target("status polls/s per process", rates["status"], 20_000)
    # Expressed as headroom so that "higher is better" holds for every target.
    report.target("150 B / Redis bytes per queued user", 150 / per_user, 1.0)
    return report
