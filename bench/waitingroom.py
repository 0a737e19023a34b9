"""Waiting room: enqueues/s and status polls/s of ``gatekeeper serve`` as users run it.

The product as a user runs it: ``gatekeeper serve --config <file>`` with its defaults (the
endpoint table on the gateway's listener, the embedded admission worker on, per-IP limits
through the shared limiter),
Redis (a private ``redis-server`` started for the run) and SQLite (migrated first, as ``serve``
requires), one tenant from ``GATEKEEPER_BUSINESS_IDS=bench=<secret key>``. The only change to
the defaults is the tenant's own per-IP limits, raised through ``POST /config`` with its secret
key (as a tenant would) so that one load generator on one address is not refused.

``wrk`` (1 thread, 64 connections) drives two rows: enqueues (a new user each) and status
polls (5,000 visitors' tokens in a cycle: after the first round they are repeat polls, the
usual case of a visitor polling every few seconds). Each row reports requests/s, non-2xx
answers and the CPU microseconds per request summed over the serving processes (the ``serve``
process and any children, from ``/proc``): steadier than the rate on a shared machine. Redis's
own CPU per request (``INFO cpu``) is reported beside it.

Last, Redis memory per queued user: ``INFO memory`` ``used_memory`` before and after enqueueing
N users straight into the store (1M; 100k with ``--quick``), divided by N.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import redis.asyncio as aioredis

from bench.net import free_port, wait_port
from bench.report import Report
from gatekeeper.waitingroom.deadline import StoreGuard
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.tenants import new_secret
from gatekeeper.waitingroom.tokens import HS256Signer, TokenCodec

TENANT = "bench"
POLLERS = 5_000
# Untimed bulk loading sends thousands of batches at once: not what the request path's 0.25 s
# deadline is for.
_BULK = StoreGuard(deadline=60.0)


class _PrivateRedis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gk-bench-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port, timeout=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``serve`` with worker processes has children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def _serving_cpu(pid: int) -> float:
    return sum(_cpu_seconds(p) for p in _tree(pid))


async def _redis_cpu(url: str) -> float:
    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("cpu")
    finally:
        await client.aclose()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


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


def _wrk(url: str, script: str, seconds: int, pid: int, redis_url: str) -> dict[str, float]:
    """Requests/s, non-2xx answers, CPU microseconds per request of the serving processes
    and of Redis."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        cpu = _serving_cpu(pid)
        redis_cpu = asyncio.run(_redis_cpu(redis_url))
        out = subprocess.run(
            ["wrk", "-t1", "-c64", f"-d{seconds}s", "-s", handle.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 30,
        ).stdout  # fmt: skip
        cpu = _serving_cpu(pid) - cpu
        redis_cpu = asyncio.run(_redis_cpu(redis_url)) - redis_cpu
    finally:
        os.unlink(handle.name)
    lines = out.splitlines()
    rate = float(next(ln for ln in lines if ln.startswith("Requests/sec")).split()[1])
    total = max(1, int(next(ln for ln in lines if " requests in " in ln).split()[0]))
    errors = next((ln for ln in lines if "Non-2xx" in ln), "0").split()[-1]
    return {
        "rps": rate,
        "errors": float(errors),
        "cpu_us": cpu / total * 1e6,
        "redis_us": redis_cpu / total * 1e6,
    }


async def _tokens(redis_url: str, secret: str, n: int) -> list[str]:
    """Queue tokens of ``n`` visitors enqueued straight into the served store (untimed)."""
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, guard=_BULK)  # serve's default key prefix
    codec = TokenCodec(HS256Signer(secret))
    now = time.time()
    try:
        results = await asyncio.gather(
            *(store.enqueue(TENANT, f"poller-{i}", now, 60) for i in range(n))
        )
    finally:
        await client.aclose()
    return [
        codec.issue(TENANT, f"poller-{i}", r.ticket, now=now, ttl=600)
        for i, r in enumerate(results)
    ]


def _serve(redis_url: str, quick: bool) -> dict[str, dict[str, float]]:
    """Both rows against one ``gatekeeper serve`` (see the module docstring)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="gk-bench-wr-"))
    port = free_port()
    jwt_secret = new_secret()  # any 32+ byte secret
    tenant_key = new_secret()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")},
        "GATEKEEPER_REDIS_URL": redis_url,
        "GATEKEEPER_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'gk.db'}",
        "GATEKEEPER_BUSINESS_IDS": f"{TENANT}={tenant_key}",
        "GATEKEEPER_JWT_SECRET": jwt_secret,
        "GATEKEEPER_ADMIN_TOKEN": new_secret(),
        "GATEKEEPER_LOG_LEVEL": "warning",
    }
    conf = workdir / "gatekeeper.yaml"
    conf.write_text(f"listener: {{host: 127.0.0.1, port: {port}}}\n")
    subprocess.run(
        [sys.executable, "-m", "gatekeeper", "migrate"], env=env, check=True, capture_output=True
    )
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper", "serve", "--config", str(conf)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    seconds = 3 if quick else 8
    try:
        wait_port(port)
        limits = {
            "ip_enqueue_limit": 1_000_000,
            "ip_enqueue_limit_interval": 1,
            "ip_status_polling_limit": 1_000_000,
            "ip_status_polling_limit_interval": 1,
        }
        request = urllib.request.Request(
            url + "/config", data=json.dumps(limits).encode(), method="POST",
            headers={"business_id": tenant_key, "Content-Type": "application/json"},
        )  # fmt: skip
        # (Seen at once: one process, which cached what it saved.)
        urllib.request.urlopen(request, timeout=10).read()
        enqueue = _wrk(url, _ENQUEUE_LUA, seconds, proc.pid, redis_url)
        tokens = asyncio.run(_tokens(redis_url, jwt_secret, POLLERS))
        token_file = workdir / "tokens.txt"
        token_file.write_text("\n".join(tokens) + "\n")
        status = _wrk(url, _STATUS_LUA % token_file, seconds, proc.pid, redis_url)
    except Exception:
        log.flush()
        print((workdir / "serve.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"enqueue": enqueue, "status": status}


async def _memory(url: str, n: int) -> float:
    client = aioredis.Redis.from_url(url)
    store = RedisStore(client, prefix="mem", guard=_BULK)
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
        ["measure", "value", "unit"],
        meta={
            "path": "gatekeeper serve (defaults, worker on), private redis-server, SQLite; wrk",
            "load": "wrk -t1 -c64",
        },
    )
    users = 100_000 if quick else 1_000_000
    server = _PrivateRedis()
    try:
        served = _serve(server.url, quick)
        per_user = asyncio.run(_memory(server.url, users))
    finally:
        server.stop()
    report.meta["load_average"] = list(os.getloadavg())
    for key, label in (("enqueue", "enqueues"), ("status", "status polls (repeat polls)")):
        row = served[key]
        report.add(
            measure=f"{label}, gatekeeper serve (non-2xx: {row['errors']:.0f})",
            value=row["rps"],
            unit="req/s",
        )
        report.add(
            measure=f"{label}: CPU of the serving processes", value=row["cpu_us"], unit="us/req"
        )
        report.add(measure=f"{label}: CPU of redis-server", value=row["redis_us"], unit="us/req")
    report.add(measure=f"Redis bytes per queued user at {users:,}", value=per_user, unit="B")
    report.target("enqueues/s, gatekeeper serve", served["enqueue"]["rps"], 10_000)
    report.target("status polls/s, gatekeeper serve", served["status"]["rps"], 20_000)
    # Expressed as headroom so that "higher is better" holds for every target.
    report.target("150 B / Redis bytes per queued user", 150 / per_user, 1.0)
    return report
