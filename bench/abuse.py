"""What abuse detection costs a request: CPU per request with detection on vs off.

Two ``gatekeeper serve`` processes (one worker each, Redis, identity on one SQLite file) in
front of one nginx origin, identical but for ``abuse.enabled``, loaded three ways:

``open``     a proxied route without auth answered 200: no request is an observation (the cost
             is the accounting's look at each answer)
``api_key``  a proxied route authenticating an API key: EVERY request is an observation (keys
             per address, networks per key), the worst case for the queue and the background
             evaluation, whose CPU is the serving process's too
``404``      no route (the built-in 404): every request is a scanning observation

For each, rounds alternate between the two processes; the figure is each process's CPU time
per request, medians over the rounds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench.gateway import _cleanup_redis, gatekeeper_env, nginx_conf
from bench.net import free_port, wait_port
from bench.report import Report
from bench.route_options import _post
from bench.serving import Contender, Procs, measure, median, rounds, wrk

CONNECTIONS = 32


def _config(path: Path, port: int, upstream: int, *, enabled: bool) -> Path:
    config = {
        "listener": {"host": "127.0.0.1", "port": port, "shutdown_grace": 1},
        "upstreams": {"up": {"endpoints": [f"http://127.0.0.1:{upstream}"]}},
        "routes": [
            {"name": "api", "path_prefix": "/api", "upstream": "up", "auth": "api_key"},
            {"name": "open", "path_prefix": "/open", "upstream": "up"},
        ],
        "abuse": {"enabled": enabled},
    }
    path.write_text(json.dumps(config))
    return path


def run(quick: bool) -> Report:
    """Measure both processes; see the module docstring."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    seconds = 3.0 if quick else 8.0
    count = 2 if quick else 6
    workdir = Path(tempfile.mkdtemp(prefix="gk-bench-abuse-"))
    procs = Procs(workdir / "stderr.log")
    env = gatekeeper_env(workdir)
    prefix = f"bench-abuse-{uuid.uuid4().hex[:8]}"
    env["GATEKEEPER_LIVE_STATS_PREFIX"] = prefix
    report = Report("abuse", ["load", "detection", "req/s", "p99 ms", "cpu us/req", "x off"])
    load_before = list(os.getloadavg())
    try:
        up = free_port()
        procs.start([nginx, "-c", str(nginx_conf(workdir, "up", up, None))])
        gk = [sys.executable, "-m", "gatekeeper"]
        subprocess.run([*gk, "migrate"], env=env, check=True, capture_output=True)
        servers: dict[str, tuple[int, int]] = {}
        for name, enabled in (("off", False), ("on", True)):
            port = free_port()
            config = _config(workdir / f"{name}.yaml", port, up, enabled=enabled)
            server = procs.start([*gk, "serve", "--config", str(config), "--workers", "1"], env)
            servers[name] = (port, server.pid)
        wait_port(up)
        for port, _ in servers.values():
            wait_port(port)
        base = f"http://127.0.0.1:{servers['off'][0]}"
        # The free tier's limit must admit everything the bench sends.
        tier = {"policies": [{"rate": "10000000/second"}]}
        _post(f"{base}/admin/tiers/free", tier, env["GATEKEEPER_ADMIN_TOKEN"], "PUT")
        tokens = _post(f"{base}/auth/register", {"email": f"{prefix}@example.com",
                                                  "password": "bench password 123"})  # fmt: skip
        key = _post(f"{base}/auth/create_api_key", {"name": "bench"}, tokens["access_token"])
        headers = (f"X-API-Key: {key['api_key']}",)
        paths = {"open": ("/open/x", ()), "api_key": ("/api/x", headers), "404": ("/none", ())}
        worst = 1.0
        for load, (path, sent) in paths.items():
            pair = [
                Contender(name, f"http://127.0.0.1:{port}{path}", pid, sent)
                for name, (port, pid) in servers.items()
            ]
            for contender in pair:
                warm = wrk(contender.url, CONNECTIONS, 2, sent)
                if warm["errors"] and load != "404":
                    raise RuntimeError(f"{contender.name} answers errors:\n{procs.tail()}")
            samples = rounds(pair, count, lambda c: measure(c, CONNECTIONS, seconds))
            off = median(samples["off"])
            for name, runs in samples.items():
                m = median(runs)
                report.add(
                    load=load, detection=name,
                    **{"req/s": m["rps"], "p99 ms": m["p99"], "cpu us/req": m["cpu_us"],
                       "x off": m["cpu_us"] / off["cpu_us"]},
                )  # fmt: skip
            on = median(samples["on"])
            report.meta[f"cpu_us_added_{load}"] = on["cpu_us"] - off["cpu_us"]
            if load != "404":
                worst = min(worst, off["cpu_us"] / on["cpu_us"])
        report.target(
            "off cpu / on cpu on proxied routes, the worse of open and api_key "
            "(>= 0.952: detection costs at most +5% CPU per proxied request)",
            worst,
            1 / 1.05,
        )
        report.meta.update(
            {"rounds": count, "wrk_seconds": seconds, "connections": CONNECTIONS,
             "load_average_before": load_before, "load_average_after": list(os.getloadavg())}
        )  # fmt: skip
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        _cleanup_redis(prefix)
    return report
