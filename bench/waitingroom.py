"""Waiting room: enqueues/s and status polls/s per process, Redis bytes per queued user.

Everything runs against a private ``redis-server`` started for the run (nothing shared is
touched). Throughput is measured two ways:

* **service layer** (``WaitingRoomService``: tenant config lookup, token signing/verification,
  coalesced Lua calls), 256 concurrent callers in this process, per-IP limiter off;
* **HTTP**: ``wrk`` (1 thread, 64 connections) against one Gatekeeper process (the gateway's
  own server serving the endpoint table with the waiting-room component, per-IP limits on
  through the Redis limit store, limits raised so that nothing is refused); the baseline of
  each HTTP row is the same operation at the service layer. Each HTTP row also reports the
  Gatekeeper process's CPU microseconds per request (``/proc``; 0 where there is none).

Status polls are measured twice: the first poll of each token at a replica that has not seen
it (full signature check), and repeated polls over a working set that fits the verified-token
cache (the usual case: a visitor polls every few seconds with the same token). Each
service-layer row is the median of three rounds; CPU microseconds per call, in this process
and in ``redis-server`` (``INFO cpu``), are reported too, being steadier than rates when the
machine is shared.

The baseline, measured in the same run, is one plain redis-py ``GET`` per call at the service
layer's concurrency: what a design with one Redis round trip per request could reach. Memory
is ``INFO memory`` ``used_memory`` before and after enqueueing N users (1M; 100k with
``--quick``), divided by N.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import redis.asyncio as aioredis

from bench.report import Report
from gatekeeper.testing import FakeClock
from gatekeeper.waitingroom.config import WaitingRoomSettings
from gatekeeper.waitingroom.config_repository import CachedConfigs, MemoryConfigRepository
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.service import WaitingRoomService
from gatekeeper.waitingroom.tokens import HS256Signer, TokenCodec

CONCURRENCY = 256
HOT = 10_000  # tokens polled repeatedly (below the codec's verified-token cache)


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


class _Rate(NamedTuple):
    """Calls/s (wall clock), and CPU microseconds per call in this process and in Redis."""

    per_second: float
    cpu_us: float
    redis_us: float


async def _redis_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _rate(client: aioredis.Redis, n: int, op: Callable[[int], Awaitable[object]]) -> _Rate:
    """Rate of ``op(i)`` for i in range(n), CONCURRENCY at a time. CPU time per call is less
    sensitive than the wall-clock rate to the other tenants of a shared machine."""
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await op(i)

    redis_before = await _redis_cpu(client)
    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    redis_cpu = await _redis_cpu(client) - redis_before
    return _Rate(n / wall, cpu / n * 1e6, redis_cpu / n * 1e6)


async def _throughput(url: str, n: int, prefix: str) -> dict[str, _Rate]:
    client = aioredis.Redis.from_url(url, max_connections=CONCURRENCY + 16)
    store = RedisStore(client, prefix=prefix)
    clock = FakeClock()
    wr = WaitingRoomSettings(config_cache_seconds=60)
    configs = CachedConfigs(MemoryConfigRepository(["bench"]), clock, 3600)
    service = WaitingRoomService(
        store, configs, TokenCodec(HS256Signer("b" * 32)), clock, wr, limiter=None
    )
    # A second replica sharing the key: it has verified none of the tokens (first polls).
    other = WaitingRoomService(
        store, configs, TokenCodec(HS256Signer("b" * 32)), clock, wr, limiter=None
    )
    tokens: list[str] = [""] * n
    try:
        await client.set(prefix + ":k", "v")
        baseline = await _rate(client, n, lambda i: client.get(prefix + ":k"))

        async def enqueue(i: int) -> None:
            tokens[i] = (await service.enqueue("bench", f"user-{i}")).jwt

        enqueues = await _rate(client, n, enqueue)
        first = await _rate(client, n, lambda i: other.status("bench", tokens[i]))
        # Visitors poll every few seconds: a working set that fits the verified-token cache,
        # each token polled before (untimed), then n polls over it.
        hot = tokens[:HOT]
        for token in hot:
            await other.status("bench", token)
        again = await _rate(client, n, lambda i: other.status("bench", hot[i % HOT]))
    finally:
        await client.aclose()
    return {"baseline": baseline, "enqueue": enqueues, "status": first, "status_again": again}


def _median(rounds: list[dict[str, _Rate]]) -> dict[str, _Rate]:
    """Per measure, the round with the median rate (rounds are noisy on a shared machine)."""
    return {
        key: sorted((r[key] for r in rounds), key=lambda rate: rate.per_second)[len(rounds) // 2]
        for key in rounds[0]
    }


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


_SERVER = """
import asyncio, signal, sys
from gatekeeper.app import Gateway
from gatekeeper.gateway.config import parse_config
from gatekeeper.gateway.http.server import install_uvloop
from gatekeeper.settings import Settings

async def main():
    config = parse_config({"listener": {"host": "127.0.0.1", "port": int(sys.argv[1])}})
    gateway = Gateway(Settings(), config, port=int(sys.argv[1]),
                      components=("gatekeeper.waitingroom.component:create_component",))
    await gateway.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await gateway.stop()

install_uvloop()
asyncio.run(main())
"""

_ENQUEUE_LUA = """
counter = 0
prefix = tostring(math.random(1, 1000000000))
request = function()
  counter = counter + 1
  return wrk.format("POST", "/queue/enqueue",
    {["business_id"] = "bench", ["user_id"] = "h" .. prefix .. "-" .. counter}, "")
end
"""

_STATUS_LUA = """
tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = line end
i = 0
request = function()
  i = i %% #tokens + 1
  return wrk.format("GET", "/queue/status", {["business_id"] = "bench", ["jwt"] = tokens[i]})
end
"""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(url: str, script: str, seconds: int, pid: int) -> tuple[float, int, float]:
    """Requests/s, non-2xx answers, and CPU microseconds per request of the server ``pid``
    (steadier than the rate when wrk, Redis and other work share the cores)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        cpu = _cpu_seconds(pid)
        out = subprocess.run(
            ["wrk", "-t1", "-c64", f"-d{seconds}s", "-s", handle.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 30,
        ).stdout  # fmt: skip
        cpu = _cpu_seconds(pid) - cpu
    finally:
        os.unlink(handle.name)
    lines = out.splitlines()
    rate = float(next(ln for ln in lines if ln.startswith("Requests/sec")).split()[1])
    total = int(next(ln for ln in lines if " requests in " in ln).split()[0])
    errors = next((ln for ln in lines if "Non-2xx" in ln), "0").split()[-1]
    return rate, int(errors), cpu / max(1, total) * 1e6


def _http(redis_url: str, quick: bool) -> dict[str, float]:
    """Requests/s through one Gatekeeper process (see the module docstring)."""
    import json
    import urllib.request

    from gatekeeper.persistence.db import Database
    from gatekeeper.persistence.migrate import upgrade

    if shutil.which("wrk") is None:
        return {}
    workdir = tempfile.mkdtemp(prefix="gk-bench-http-")
    db_url = f"sqlite+aiosqlite:///{workdir}/gk.db"

    async def migrate() -> None:
        database = Database(db_url)
        await upgrade(database)
        await database.aclose()

    asyncio.run(migrate())
    port = _free_port()
    secret = "bench-secret-bench-secret-bench-secret"
    prefix = "http"
    env = {
        **os.environ,
        "GATEKEEPER_REDIS_URL": redis_url,
        "GATEKEEPER_DATABASE_URL": db_url,
        "GATEKEEPER_BUSINESS_IDS": "bench",
        "GATEKEEPER_JWT_SECRET": secret,
        "GATEKEEPER_WAITINGROOM_REDIS_PREFIX": prefix,
        "GATEKEEPER_WAITINGROOM_EMBEDDED_WORKER": "false",
        "GATEKEEPER_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(port)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    seconds = 3 if quick else 8
    try:
        assert proc.stdout is not None
        if b"ready" not in proc.stdout.readline():
            raise RuntimeError("the Gatekeeper process did not start")
        limits = {
            "ip_enqueue_limit": 1_000_000,
            "ip_enqueue_limit_interval": 1,
            "ip_status_polling_limit": 1_000_000,
            "ip_status_polling_limit_interval": 1,
        }
        request = urllib.request.Request(
            url + "/config", data=json.dumps(limits).encode(), method="POST",
            headers={"business_id": "bench", "Content-Type": "application/json"},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=10).read()
        enqueue, enqueue_errors, enqueue_cpu = _wrk(url, _ENQUEUE_LUA, seconds, proc.pid)
        tokens = asyncio.run(_tokens(redis_url, secret, 5000, prefix))
        token_file = os.path.join(workdir, "tokens.txt")
        with open(token_file, "w") as handle:
            handle.write("\n".join(tokens) + "\n")
        status, status_errors, status_cpu = _wrk(url, _STATUS_LUA % token_file, seconds, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "enqueue": enqueue, "enqueue_errors": enqueue_errors, "enqueue_cpu": enqueue_cpu,
        "status": status, "status_errors": status_errors, "status_cpu": status_cpu,
    }  # fmt: skip


async def _tokens(redis_url: str, secret: str, n: int, prefix: str) -> list[str]:
    """Queue tokens of ``n`` users enqueued (directly) in the HTTP run's store."""
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=prefix)
    codec = TokenCodec(HS256Signer(secret))
    now = time.time()
    try:
        results = await asyncio.gather(
            *(store.enqueue("bench", f"poller-{i}", now, 60) for i in range(n))
        )
    finally:
        await client.aclose()
    return [
        codec.issue("bench", f"poller-{i}", r.ticket, now=now, ttl=600)
        for i, r in enumerate(results)
    ]


ROUNDS = 3

_LABELS = (
    ("enqueue", "enqueues"),
    ("status", "status polls, first poll of each token"),
    ("status_again", f"status polls, {HOT:,} tokens verified before"),
)


def run(quick: bool) -> Report:
    report = Report(
        "waitingroom",
        ["measure", "value", "unit", "baseline", "ratio"],
        meta={
            "path": "service layer (no HTTP), private redis-server, 1 process; HTTP rows: wrk",
            "rounds": f"median of {ROUNDS} service-layer rounds",
        },
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
        rates = _median(
            [asyncio.run(_throughput(server.url, n, f"bench{i}")) for i in range(ROUNDS)]
        )
        asyncio.set_event_loop_policy(None)
        http = _http(server.url, quick)
        per_user = asyncio.run(_memory(server.url, users))
    finally:
        server.stop()
        asyncio.set_event_loop_policy(None)
    report.meta["load_average"] = list(os.getloadavg())
    base = rates["baseline"]
    report.add(
        measure="GET round trips (baseline)",
        value=base.per_second,
        unit="ops/s",
        baseline=base.per_second,
        ratio=1.0,
    )
    for key, label in _LABELS:
        report.add(
            measure=f"{label} (service layer)",
            value=rates[key].per_second,
            unit="ops/s",
            baseline=base.per_second,
            ratio=rates[key].per_second / base.per_second,
        )
    for key, label in (("baseline", "GET round trip"), *_LABELS):
        report.add(measure=f"{label}: CPU in this process", value=rates[key].cpu_us, unit="us")
        report.add(measure=f"{label}: CPU in redis-server", value=rates[key].redis_us, unit="us")
    for key, label in (("enqueue", "enqueues"), ("status", "status polls")):
        if key in http:
            # Through the whole gateway process (per-IP limits), against the service layer.
            service = rates[key].per_second
            report.add(
                measure=f"{label} (HTTP, wrk -c64; non-2xx: {http[key + '_errors']:.0f})",
                value=http[key],
                unit="req/s",
                baseline=service,
                ratio=http[key] / service,
            )
            report.add(
                measure=f"{label} (HTTP): CPU of the Gatekeeper process",
                value=http[key + "_cpu"],
                unit="us/req",
            )
    report.add(measure=f"Redis bytes per queued user at {users:,}", value=per_user, unit="B")
    report.target("enqueues/s per process (service layer)", rates["enqueue"].per_second, 10_000)
    report.target(
        "first status polls/s per process (service layer)", rates["status"].per_second, 20_000
    )
    if "enqueue" in http:
        report.target("enqueues/s per process (HTTP)", http["enqueue"], 10_000)
        # wrk cycles over 5,000 tokens: after the first round they are repeat polls (the
        # usual case: a visitor polls every few seconds with the same token).
        report.target("status polls/s per process (HTTP, repeat polls)", http["status"], 20_000)
    # Expressed as headroom so that "higher is better" holds for every target.
    report.target("150 B / Redis bytes per queued user", 150 / per_user, 1.0)
    return report
