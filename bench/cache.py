"""The gateway's HTTP cache under load: hits from memory and from Redis against plain forwarding.

Setup (one run, this machine): an nginx upstream (1 worker) answering a fixed JSON body with
``Cache-Control: max-age=3600``, and three Gatekeeper processes (1 each) in front of it: the route
(a) not cached (every request forwarded: the baseline), (b) cached in the memory store, (c)
cached in Redis (``GATEKEEPER_BENCH_REDIS_URL``). After a warm-up every request to (b) and (c) is
a hit. ``wrk -t1 -c64`` measures each; ratios are against (a) measured in the same run.

What it shows: what a hit costs compared with a forward on a fast loopback upstream. With a slow
or remote upstream the gain is larger (a hit never waits for it). The Redis store is measured
with its in-process near tier (default, ``near_ttl: 1``) and without it (``near_ttl: 0``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from bench.gateway import nginx_conf, wrk
from bench.net import free_port, wait_port
from bench.report import Report

REDIS_URL = os.environ.get("GATEKEEPER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
BODY = '{"backend":"upstream","ok":true,"n":12345}'


def _gatekeeper_conf(
    workdir: Path, name: str, port: int, upstream: int, store: str | None, near: float = 1.0
) -> Path:
    cache = "false" if store is None else "true"
    section = (
        ""
        if store is None
        else f"cache: {{store: {store}, redis_prefix: {name}, near_ttl: {near}}}\n"
    )
    conf = workdir / f"{name}.yaml"
    conf.write_text(
        f"""listener: {{host: 127.0.0.1, port: {port}, shutdown_grace: 1}}
upstreams:
  up:
    endpoints: [http://127.0.0.1:{upstream}]
routes:
  - name: all
    path_prefix: /
    upstream: up
    cache: {cache}
{section}"""
    )
    return conf


def _cache_status(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench", timeout=5) as response:
            return str(response.headers.get("cache-status", ""))
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"port {port}: {exc.code} {exc.read()[:500]!r}") from exc


def run(quick: bool) -> Report:
    """Measure forwarding against memory and Redis hits; see the module docstring."""
    nginx = "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "nginx"
    seconds = 3.0 if quick else 10.0
    workdir = Path(tempfile.mkdtemp(prefix="gk-bench-cache-"))
    prefix = f"bench-cache-{uuid.uuid4().hex[:8]}"
    ports = {k: free_port() for k in ("up", "plain", "memory", "redis", "redis_far")}
    env = dict(
        os.environ, GATEKEEPER_REDIS_URL=REDIS_URL, GATEKEEPER_LOG_LEVEL="warning",
        GATEKEEPER_JWT_SECRET=uuid.uuid4().hex, GATEKEEPER_ADMIN_TOKEN=uuid.uuid4().hex,
        GATEKEEPER_DATABASE_URL=f"sqlite+aiosqlite:///{workdir}/gatekeeper.db",
    )  # fmt: skip
    log = (workdir / "stderr.log").open("ab")
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str]) -> None:
        procs.append(
            subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=log, env=env, start_new_session=True
            )
        )

    report = Report("cache", ["contender", "req/s", "p50 ms", "p99 ms", "x forwarding", "errors"])
    try:
        gk = [sys.executable, "-m", "gatekeeper"]
        subprocess.run([*gk, "migrate"], env=env, check=True, capture_output=True, timeout=120)
        start([nginx, "-c", str(nginx_conf(workdir, "nginx", ports["up"], None, "max-age=3600"))])
        gk += ["serve", "--config"]
        setups = [("plain", None, 1.0), ("memory", "memory", 1.0), ("redis", "redis", 1.0),
                  ("redis_far", "redis", 0.0)]  # fmt: skip
        for name, store, near in setups:
            conf = _gatekeeper_conf(
                workdir, f"{prefix}-{name}", ports[name], ports["up"], store, near
            )
            start([*gk, str(conf)])
        for name, port in ports.items():
            try:
                wait_port(port)
            except RuntimeError:
                tail = (workdir / "stderr.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} did not start on port {port}:\n{tail}") from None
        for name in ("memory", "redis", "redis_far"):
            _cache_status(ports[name])  # store the entry
            status = _cache_status(ports[name])
            if "hit" not in status:
                raise RuntimeError(f"{name}: expected a cache hit, got Cache-Status {status!r}")
        contenders = [
            ("upstream direct", ports["up"]),
            ("gatekeeper, forwarding (no cache)", ports["plain"]),
            ("gatekeeper, memory cache hits", ports["memory"]),
            ("gatekeeper, redis cache hits (near tier 1 s)", ports["redis"]),
            ("gatekeeper, redis cache hits (every hit reads redis)", ports["redis_far"]),
        ]
        for _, port in contenders:
            wrk(f"http://127.0.0.1:{port}/bench", 64, 1)
        results = {
            name: wrk(f"http://127.0.0.1:{port}/bench", 64, seconds) for name, port in contenders
        }
        base = results["gatekeeper, forwarding (no cache)"]["rps"]
        for name, r in results.items():
            report.add(
                contender=name, **{"req/s": r["rps"], "p50 ms": r["p50"], "p99 ms": r["p99"],
                "x forwarding": r["rps"] / base, "errors": int(r["errors"])},
            )  # fmt: skip
        memory = results["gatekeeper, memory cache hits"]["rps"]
        report.meta.update({"wrk_seconds": seconds, "connections": 64})
        # A hit skips the upstream round trip: it must not be slower than forwarding.
        report.target("memory cache hits / forwarding throughput", memory / base, 1.0)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        _cleanup_redis(prefix)
    return report


def _cleanup_redis(prefix: str) -> None:
    """Remove the benchmark's keys (never the rest of the shared Redis)."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.unlink(*keys)
        client.close()
    except Exception:  # cleanup is best effort: the keys expire on their own
        pass
