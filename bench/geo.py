"""Geographic routing: what a lookup costs, and what a geo route costs per request.

Micro: a cached lookup (``Locator.place`` of an address seen before: the per-request cost of
the database) and a whole choice (``GeoRouter.route``: lookup, nearest serving datacenter,
counters), timed in process over many calls.

Served: two ``gatekeeper serve --workers 1`` processes as users run them, in front of one nginx
upstream (a fixed 40-byte answer), identical but for their route: three datacenter pools (each
the same nginx) and ``trusted_proxies: [127.0.0.1]`` in both; one route sends to ``eu-west``
directly, the other is ``geo: true``. wrk sends ``X-Forwarded-For: 81.2.69.142`` (a European
client: eu-west in the demo data) to both. The contenders alternate over rounds (the order
rotating) and the table gives medians of req/s and of the CPU time each process tree spent per
request, the figure least disturbed by the shared machine's other load.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gateway import gatekeeper_env, nginx_conf
from bench.net import free_port, wait_port
from bench.report import Report
from bench.serving import Contender, Procs, measure, median, rounds, wrk
from gatekeeper.gateway.config import parse_config
from gatekeeper.gateway.flow.routing import Route
from gatekeeper.gateway.geo import GeoRouter, route_policy
from gatekeeper.gateway.geo.demo import build_demo_database
from gatekeeper.gateway.http.messages import Body, ProxyRequest
from gatekeeper.gateway.upstream.upstreams import build_pool
from gatekeeper.observability.metrics import Metrics

__all__ = ["run"]

CONNECTIONS = 64
CLIENT = "81.2.69.142"
DATACENTERS = {
    "us-east": ("us", 39.04, -77.49),
    "eu-west": ("eu", 53.35, -6.26),
    "ap-south": ("ap", 19.08, 72.88),
}


def _config(database: Path, port: int, upstream_port: int, *, geo: bool) -> dict[str, Any]:
    route: dict[str, Any] = {"name": "all", "path_prefix": "/"}
    route.update({"geo": True} if geo else {"upstream": "eu-west"})
    return {
        "listener": {"host": "127.0.0.1", "port": port, "shutdown_grace": 1},
        "trusted_proxies": ["127.0.0.1/32"],
        "upstreams": {
            name: {"endpoints": [f"http://127.0.0.1:{upstream_port}"]} for name in DATACENTERS
        },
        "geo": {
            "database": str(database),
            "regions": {
                "us": {"continents": ["NA", "SA"]},
                "eu": {"continents": ["EU", "AF"]},
                "ap": {"continents": ["AS", "OC"]},
            },
            "datacenters": {
                name: {"region": region, "latitude": lat, "longitude": lon, "upstream": name}
                for name, (region, lat, lon) in DATACENTERS.items()
            },
        },
        "routes": [route],
    }


def _per_call_us(call: Any, arg: Any, count: int) -> float:
    """Microseconds per call (the best of five runs of ``count`` calls)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(count):
            call(arg)
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def _micro(database: Path, quick: bool) -> dict[str, float]:
    """Cached lookup and whole choice, in process."""
    config = parse_config(_config(database, 8080, 9, geo=True))
    assert config.geo is not None
    pools = {name: build_pool(name, uc) for name, uc in config.upstreams.items()}
    # No client-region header: the same request object is routed again and again.
    geo = config.geo.model_copy(update={"headers": config.geo.headers.model_copy(
        update={"client_region": None})})  # fmt: skip
    router = GeoRouter(geo, pools, metrics=Metrics())  # counted as when serving
    route = Route(name="all", upstream="", geo=route_policy(True, geo))
    request = ProxyRequest("GET", b"/", "/", [], Body.of(), client_ip=CLIENT)
    locator = router.locator
    locator.place(CLIENT)  # cached from now on
    count = 50_000 if quick else 300_000
    return {
        "lookup_us": _per_call_us(locator.place, CLIENT, count),
        "route_us": _per_call_us(lambda r: router.route(route, r), request, count),
    }


def run(quick: bool) -> Report:
    """Measure the micro figures and the two contenders; see the module docstring."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    seconds = 3.0 if quick else 6.0
    count = 2 if quick else 4
    workdir = Path(tempfile.mkdtemp(prefix="gk-bench-geo-"))
    database = build_demo_database(workdir / "geo.mmdb")
    report = Report(
        "geo",
        ["contender", "req/s", "p50 ms", "p99 ms", "cpu us/req", "x plain cpu", "errors"],
    )
    micro = _micro(database, quick)
    ports = {name: free_port() for name in ("up", "plain", "geo")}
    procs = Procs(workdir / "stderr.log")
    env = gatekeeper_env(workdir)
    try:
        subprocess.run(
            [sys.executable, "-m", "gatekeeper", "migrate"], env=env, check=True,
            capture_output=True,
        )  # fmt: skip
        procs.start([nginx, "-c", str(nginx_conf(workdir, "up", ports["up"], None))])
        pids = {}
        for name in ("plain", "geo"):
            path = workdir / f"{name}.yaml"
            path.write_text(
                json.dumps(_config(database, ports[name], ports["up"], geo=name == "geo"))
            )
            gk = [sys.executable, "-m", "gatekeeper", "serve", "--config", str(path)]
            pids[name] = procs.start([*gk, "--workers", "1"], env).pid
        for name, port in ports.items():
            try:
                wait_port(port)
            except RuntimeError:
                raise RuntimeError(f"{name} did not start on {port}:\n{procs.tail()}") from None
        header = (f"X-Forwarded-For: {CLIENT}",)
        contenders = [
            Contender("route without geo (to eu-west)", f"http://127.0.0.1:{ports['plain']}/b",
                      pids["plain"], headers=header),
            Contender("geo route (nearest: eu-west)", f"http://127.0.0.1:{ports['geo']}/b",
                      pids["geo"], headers=header),
        ]  # fmt: skip
        for contender in contenders:  # warm up: connections, pools, the address cache
            wrk(contender.url, CONNECTIONS, 2, contender.headers)
            if wrk(contender.url, 1, 1, contender.headers)["errors"]:
                raise RuntimeError(f"{contender.name} answers errors:\n{procs.tail()}")
        samples = rounds(contenders, count, lambda c: measure(c, CONNECTIONS, seconds))
        results = {name: median(s) for name, s in samples.items()}
        plain = results[contenders[0].name]
        for name, r in results.items():
            report.add(
                contender=name, **{"req/s": r["rps"], "p50 ms": r["p50"], "p99 ms": r["p99"],
                "cpu us/req": r["cpu_us"], "x plain cpu": r["cpu_us"] / plain["cpu_us"],
                "errors": int(r["errors"])},
            )  # fmt: skip
        report.add(
            contender="cached lookup (in process, per call)", **{"cpu us/req": micro["lookup_us"]}
        )
        report.add(contender="whole choice: lookup, nearest serving, counters (per call)",
                   **{"cpu us/req": micro["route_us"]})  # fmt: skip
        geo = results[contenders[1].name]
        overhead = (geo["cpu_us"] / plain["cpu_us"] - 1.0) * 100.0
        report.meta.update(
            {"rounds": count, "wrk_seconds": seconds, "connections": CONNECTIONS,
             "cached_lookup_us": round(micro["lookup_us"], 3),
             "route_choice_us": round(micro["route_us"], 3),
             "cpu_overhead_percent": round(overhead, 2),
             "samples_cpu_us": {n: [round(s["cpu_us"], 1) for s in ss]
                                for n, ss in samples.items()}}
        )  # fmt: skip
        report.target("2 us - cached lookup (us)", 2.0 - micro["lookup_us"], 0.0)
        report.target("10% - geo route CPU overhead per request (%)", 10.0 - overhead, 0.0)
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return report
