"""Gatekeeper behind Envoy: Envoy alone, Envoy + Gatekeeper as its rate limit service,
Gatekeeper's own gateway with the same limit, and nginx, in one run; then ShouldRateLimit
calls/s from concurrent connections to one Gatekeeper process.

Setup: one upstream (nginx, 1 worker, a fixed 40-byte JSON answer) and the ways to reach it:

- nginx as a reverse proxy (1 worker, upstream keep-alive), the baseline;
- Envoy alone (``--concurrency 1``, no filters);
- Envoy + Gatekeeper RLS: the same Envoy with ``envoy.filters.http.ratelimit`` asking one
  ``gatekeeper serve --workers 1`` (its gRPC port) for a ``remote_address`` descriptor, the
  limit high enough to admit everything, counted in Redis;
- Gatekeeper's gateway (``gatekeeper serve --workers 1``) with the same limit on its route.

Throughput: ``wrk -t1 -c64``; contenders alternate over rounds (the order rotating), medians;
CPU per request summed over every process of the contender (Envoy AND Gatekeeper for the RLS
rows, the Gatekeeper's share in the meta). Then ``bench/h2_client.py`` (a lean HTTP/2 client:
pre-encoded frames, several connections, many calls in flight on each; grpcio's Python client
costs more CPU per call than the server it would measure) calls ShouldRateLimit on one
Gatekeeper process directly: calls/s and the server's CPU per call, for each gRPC server. The
client shares the machine's two cores with the server, so the calls/s one core could give at
the measured cost is reported too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from bench.gateway import _cleanup_redis, _tool, gatekeeper_env, nginx_conf
from bench.net import free_port, wait_port
from bench.report import Report
from bench.serving import Contender, Procs, _cpu_seconds, _tree, measure, median, rounds, wrk
from gatekeeper.envoy.bootstrap import bootstrap
from gatekeeper.envoy.process import envoy_binary

__all__ = ["run"]

CONNECTIONS = 64
LIMIT = 100_000_000  # per minute: admits everything, still counted
RLS_CLIENTS = 1  # client processes
RLS_CONNECTIONS = 4  # HTTP/2 connections per client process
RLS_CONCURRENCY = 64  # calls in flight per client process


@dataclass
class Group(Contender):
    """A contender served by several process trees (Envoy and the Gatekeeper it asks)."""

    others: tuple[int, ...] = ()

    def processes(self) -> list[int]:
        return [pid for root in (self.pid, *self.others) for pid in _tree(root)]


def _gatekeeper_conf(
    workdir: Path,
    name: str,
    port: int,
    grpc_port: int,
    up: int,
    domain: str,
    server: str = "native",
) -> Path:
    """A replica: a route to the upstream limited per IP, and the same limit for Envoy."""
    conf = workdir / f"{name}.yaml"
    conf.write_text(
        f"""listener: {{host: 127.0.0.1, port: {port}, shutdown_grace: 1}}
policies:
  {domain}: {{rate: {LIMIT}/60s, algorithm: fixed_window}}
upstreams:
  up: {{endpoints: [http://127.0.0.1:{up}]}}
routes:
  - {{name: all, path_prefix: /, upstream: up, limits: [{{policy: {domain}, key: ip}}]}}
envoy:
  grpc_host: 127.0.0.1
  grpc_port: {grpc_port}
  server: {server}
  domains:
    - domain: {domain}
      descriptors:
        - key: remote_address
          name: {domain}-rls
          rate_limit: {{unit: minute, requests_per_unit: {LIMIT}}}
"""
    )
    return conf


def _envoy(
    workdir: Path, name: str, port: int, up: int, grpc_port: int | None, domain: str
) -> list[str]:
    config = bootstrap(
        listen=("127.0.0.1", port),
        backends=[("127.0.0.1", up)],
        gatekeepers=[("127.0.0.1", grpc_port or 1)],
        domain=domain,
        authz=False,
        ratelimit=grpc_port is not None,
    )
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(config))
    return [envoy_binary(), "-c", str(path), "--concurrency", "1", "--disable-hot-restart",
            "--log-level", "error"]  # fmt: skip


def _rls_calls(port: int, domain: str, pid: int, seconds: float) -> dict[str, float]:
    """RLS_CLIENTS lean HTTP/2 clients (bench/h2_client.py) against one Gatekeeper: calls/s
    and the server's CPU per call."""
    client = [sys.executable, "-m", "bench.h2_client", str(port), domain,
              str(RLS_CONNECTIONS), str(RLS_CONCURRENCY), str(seconds)]  # fmt: skip
    pids = _tree(pid)
    before = _cpu_seconds(pids)
    root = Path(__file__).resolve().parents[1]  # (-m from here: bench/envoy.py is not envoy)
    runs = [
        subprocess.Popen(client, stdout=subprocess.PIPE, text=True, cwd=root)
        for _ in range(RLS_CLIENTS)
    ]
    outs = [json.loads(run.communicate(timeout=seconds + 60)[0]) for run in runs]
    cpu = _cpu_seconds(pids) - before
    calls = sum(o["calls"] for o in outs)
    elapsed = max(o["seconds"] for o in outs)
    return {
        "calls/s": calls / elapsed,
        "server cpu us/call": cpu / max(calls, 1) * 1e6,
        "errors": float(sum(o["errors"] for o in outs)),
        "over_limit": float(sum(o["over_limit"] for o in outs)),
    }


def run(quick: bool) -> Report:
    """Measure every contender; see the module docstring."""
    nginx = _tool("nginx")
    _tool("wrk")
    envoy_binary()
    seconds = 3.0 if quick else 8.0
    count = 1 if quick else 3
    workdir = Path(tempfile.mkdtemp(prefix="gk-bench-envoy-"))
    names = ("up", "nginx", "envoy", "envoy_rls", "envoy_rls_grpcio", "gk", "gk_grpc",
             "rls", "rls_grpc", "rls_grpcio", "rls_grpcio_grpc")  # fmt: skip
    ports = {name: free_port() for name in names}
    procs = Procs(workdir / "stderr.log")
    env = gatekeeper_env(workdir)
    domain = f"bench-{uuid.uuid4().hex[:8]}"
    gk = [sys.executable, "-m", "gatekeeper", "serve", "--workers", "1", "--config"]
    report = Report(
        "envoy",
        ["contender", "req/s", "p50 ms", "p99 ms", "x nginx", "x gatekeeper gateway",
         "cpu us/req", "processes", "errors"],
    )  # fmt: skip
    try:
        subprocess.run(
            [sys.executable, "-m", "gatekeeper", "migrate"], env=env, check=True,
            capture_output=True,
        )  # fmt: skip
        up = ports["up"]

        def gatekeeper(name: str, server: str = "native") -> Popen[bytes]:
            conf = _gatekeeper_conf(
                workdir, name, ports[name], ports[f"{name}_grpc"], up, domain, server
            )
            return procs.start([*gk, str(conf)], env)

        def envoy(name: str, rls: str | None) -> Popen[bytes]:
            grpc_port = ports[f"{rls}_grpc"] if rls else None
            return procs.start(_envoy(workdir, name, ports[name], up, grpc_port, domain))

        started = {
            "up": procs.start([nginx, "-c", str(nginx_conf(workdir, "up", up, None))]),
            "nginx": procs.start(
                [nginx, "-c", str(nginx_conf(workdir, "nginx", ports["nginx"], up))]
            ),
            "envoy": envoy("envoy", None),
            # The gateway contender and the RLS behind Envoy: processes of the same kind.
            "gk": gatekeeper("gk"),
            "rls": gatekeeper("rls"),
            "rls_grpcio": gatekeeper("rls_grpcio", "grpcio"),
        }
        for name in ("up", "nginx", "envoy", "gk", "rls", "rls_grpc", "rls_grpcio_grpc"):
            try:
                wait_port(ports[name])
            except RuntimeError:
                raise RuntimeError(f"{name} did not start:\n{procs.tail()}") from None
        started["envoy_rls"] = envoy("envoy_rls", "rls")
        started["envoy_rls_grpcio"] = envoy("envoy_rls_grpcio", "rls_grpcio")
        wait_port(ports["envoy_rls"])
        wait_port(ports["envoy_rls_grpcio"])

        def url(name: str) -> str:
            return f"http://127.0.0.1:{ports[name]}/bench"

        gateway_name = "gatekeeper gateway, same limit (1 worker)"
        rls_name = "envoy + gatekeeper RLS (1 worker, native gRPC)"
        contenders: list[Contender] = [
            Contender("nginx proxy", url("nginx"), started["nginx"].pid),
            Contender("envoy alone", url("envoy"), started["envoy"].pid),
            Group(rls_name, url("envoy_rls"), started["envoy_rls"].pid,
                  others=(started["rls"].pid,)),
            Group("envoy + gatekeeper RLS (1 worker, grpcio)", url("envoy_rls_grpcio"),
                  started["envoy_rls_grpcio"].pid, others=(started["rls_grpcio"].pid,)),
            Contender(gateway_name, url("gk"), started["gk"].pid),
        ]  # fmt: skip
        for contender in contenders:  # warm up: connections, pools, scripts
            wrk(contender.url, CONNECTIONS, 2)
            if wrk(contender.url, 1, 1)["errors"]:
                raise RuntimeError(f"{contender.name} answers errors:\n{procs.tail()}")

        def measured(contender: Contender) -> dict[str, float]:
            # For Envoy + RLS, the Gatekeeper's own share of the CPU too.
            others = [p for r in getattr(contender, "others", ()) for p in _tree(r)]
            before = _cpu_seconds(others)
            result = measure(contender, CONNECTIONS, seconds)
            spent = _cpu_seconds(others) - before
            result["gatekeeper_cpu_us"] = spent / max(result["requests"], 1) * 1e6
            return result

        samples = rounds(contenders, count, measured)
        results = {name: median(s) for name, s in samples.items()}
        nginx_rps = results["nginx proxy"]["rps"]
        gateway_rps = results[gateway_name]["rps"]
        for name, r in results.items():
            _row(report, name, r, nginx_rps, gateway_rps)
        direct = {}
        for label, name in (("native gRPC", "rls"), ("grpcio", "rls_grpcio")):
            direct[label] = median(
                [
                    _rls_calls(ports[f"{name}_grpc"], domain, started[name].pid, seconds)
                    for _ in range(count)
                ]
            )
            r = direct[label]
            _row(
                report,
                f"ShouldRateLimit direct, {label} ({RLS_CLIENTS}x{RLS_CONNECTIONS} connections)",
                {"rps": r["calls/s"], "p50": float("nan"), "p99": float("nan"),
                 "cpu_us": r["server cpu us/call"], "processes": 1.0, "errors": r["errors"]},
                nginx_rps,
                gateway_rps,
            )  # fmt: skip
        native = direct["native gRPC"]
        report.meta.update(
            {"rounds": count, "wrk_seconds": seconds, "connections": CONNECTIONS,
             "load_average": list(os.getloadavg()),
             "rls_clients": RLS_CLIENTS, "rls_connections_per_client": RLS_CONNECTIONS,
             "rls_in_flight_per_client": RLS_CONCURRENCY,
             "rls_gatekeeper_cpu_us_per_request_behind_envoy": {
                 name: round(r["gatekeeper_cpu_us"], 1) for name, r in results.items()
                 if name.startswith("envoy + ")},
             "rls_calls_per_s_one_core_at_measured_cpu": {
                 label: round(1e6 / r["server cpu us/call"]) for label, r in direct.items()},
             "samples": {name: [round(s["rps"]) for s in ss] for name, ss in samples.items()}}
        )  # fmt: skip
        report.target(
            "envoy + gatekeeper RLS / gatekeeper gateway",
            results[rls_name]["rps"] / gateway_rps,
            1.5,
        )
        report.target("ShouldRateLimit calls/s, one gatekeeper process", native["calls/s"], 20_000)
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        _cleanup_redis(domain)
    return report


def _row(
    report: Report, name: str, r: dict[str, float], nginx_rps: float, gateway_rps: float
) -> None:
    report.add(
        contender=name,
        **{"req/s": r["rps"], "p50 ms": r["p50"], "p99 ms": r["p99"],
           "x nginx": r["rps"] / nginx_rps, "x gatekeeper gateway": r["rps"] / gateway_rps,
           "cpu us/req": r["cpu_us"], "processes": int(r["processes"]),
           "errors": int(r["errors"])},
    )  # fmt: skip
