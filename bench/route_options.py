"""What CORS, legacy rate-limit fields and a tier gate cost on a route (issue 16: <= +5% CPU).

One ``gatekeeper serve`` (one worker, Redis, identity on SQLite) in front of an nginx origin,
with two routes to it that differ only by the options: both authenticate an API key and apply
the key's tier limits; ``/featured`` adds ``cors`` (a cross-origin request from an allowed
origin gets its Access-Control-* fields), ``ratelimit_headers: both`` and ``tiers: [free]``.
wrk sends the same headers (the key, an Origin) to both; rounds alternate between the routes,
and the figure is the serving process's CPU time per request (same process, so only the
options differ).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench.gateway import _cleanup_redis, gatekeeper_env, nginx_conf
from bench.net import free_port, wait_port
from bench.report import Report
from bench.serving import Contender, Procs, measure, median, rounds, wrk

ORIGIN = "https://app.example.com"
CONNECTIONS = 32


def _config(path: Path, port: int, upstream: int) -> Path:
    route = {"upstream": "up", "auth": "api_key"}
    config = {
        "listener": {"host": "127.0.0.1", "port": port, "shutdown_grace": 1},
        "upstreams": {"up": {"endpoints": [f"http://127.0.0.1:{upstream}"]}},
        "routes": [
            {"name": "plain", "path_prefix": "/plain", **route},
            {"name": "featured", "path_prefix": "/featured", **route,
             "cors": {"allow_origins": [ORIGIN]}, "ratelimit_headers": "both",
             "tiers": ["free"]},
        ],
    }  # fmt: skip
    path.write_text(json.dumps(config))
    return path


def _post(
    url: str, body: dict[str, Any], token: str | None = None, method: str = "POST"
) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method=method,
    )
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return dict(json.loads(answer.read()))
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {url}: {exc.code} {exc.read()[:500]!r}") from None


def run(quick: bool) -> Report:
    """Measure both routes; see the module docstring."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    seconds = 3.0 if quick else 8.0
    count = 2 if quick else 6
    workdir = Path(tempfile.mkdtemp(prefix="gk-bench-options-"))
    procs = Procs(workdir / "stderr.log")
    env = gatekeeper_env(workdir)
    prefix = f"bench-options-{uuid.uuid4().hex[:8]}"
    env["GATEKEEPER_LIVE_STATS_PREFIX"] = prefix
    report = Report("route_options", ["route", "req/s", "p99 ms", "cpu us/req", "x plain"])
    try:
        up, port = free_port(), free_port()
        procs.start([nginx, "-c", str(nginx_conf(workdir, "up", up, None))])
        gk = [sys.executable, "-m", "gatekeeper"]
        subprocess.run([*gk, "migrate"], env=env, check=True, capture_output=True)
        config = _config(workdir / "gk.yaml", port, up)
        server = procs.start([*gk, "serve", "--config", str(config), "--workers", "1"], env)
        wait_port(up)
        wait_port(port)
        base = f"http://127.0.0.1:{port}"
        # The free tier's limit must admit everything the bench sends (both routes apply it).
        tier = {"policies": [{"rate": "10000000/second"}]}
        _post(f"{base}/admin/tiers/free", tier, env["GATEKEEPER_ADMIN_TOKEN"], "PUT")
        tokens = _post(f"{base}/auth/register", {"email": f"{prefix}@example.com",
                                                  "password": "bench password 123"})  # fmt: skip
        key = _post(f"{base}/auth/create_api_key", {"name": "bench"}, tokens["access_token"])
        headers = (f"X-API-Key: {key['api_key']}", f"Origin: {ORIGIN}")
        pair = [
            Contender(route, f"{base}/{route}/x", server.pid, headers)
            for route in ("plain", "featured")
        ]
        for contender in pair:
            warm = wrk(contender.url, CONNECTIONS, 2, headers)
            if warm["errors"]:
                raise RuntimeError(f"{contender.name} answers errors:\n{procs.tail()}")
        samples = rounds(pair, count, lambda c: measure(c, CONNECTIONS, seconds))
        plain = median(samples["plain"])
        for name, runs in samples.items():
            m = median(runs)
            report.add(
                route=name,
                **{"req/s": m["rps"], "p99 ms": m["p99"], "cpu us/req": m["cpu_us"],
                   "x plain": m["cpu_us"] / plain["cpu_us"]},
            )  # fmt: skip
        featured = median(samples["featured"])
        report.target(
            "plain cpu / featured cpu (>= 0.952: the options cost at most +5%)",
            plain["cpu_us"] / featured["cpu_us"],
            1 / 1.05,
        )
        report.meta.update({"rounds": count, "wrk_seconds": seconds, "connections": CONNECTIONS})
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        _cleanup_redis(prefix)
    return report
