"""The gateway against nginx and HAProxy, with wrk, all on this machine in one run.

Setup: one upstream (nginx, 1 worker, a fixed 40-byte JSON answer) and four ways to reach it:
(a) direct, (b) nginx as a reverse proxy with upstream keep-alive, (c) HAProxy (1 thread,
``http-reuse always``), (d) Gatekeeper (1 process) with a Redis-backed limit on every request,
high enough to admit everything; plus (e) Gatekeeper without a limit, to show the limiter's cost,
and (f) the Python floor (``bench/floor_proxy.py``): a proxy on the same uvloop + httptools that
does nothing but parse and relay, the ceiling of any Python design on this stack. Every proxy
runs one worker/process.

Throughput: ``wrk -t1 -c64`` (closed loop, saturating). Because this machine is shared, each row
also reports the serving process's CPU time per request (from /proc), the figure least
disturbed by whatever else runs. Half load: wrk has no fixed-rate mode,
so we measure at a connection count chosen so that the gateway runs at about half its saturation
throughput (the smallest count in 1, 2, 4, ... reaching >= 50% of it), and compare its p99 with
the upstream's p99 at the same connection count: "p99 added" is the difference.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench.net import free_port, wait_port
from bench.report import Report

REDIS_URL = os.environ.get("GATEKEEPER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
BODY = '{"backend":"upstream","ok":true,"n":12345}'


def nginx_conf(
    workdir: Path, name: str, port: int, upstream_port: int | None, cache_control: str = ""
) -> Path:
    """nginx as the origin (``upstream_port`` None: answers BODY itself, with ``cache_control``
    if given) or as a keep-alive reverse proxy to ``upstream_port``."""
    if upstream_port is None:
        header = f'add_header Cache-Control "{cache_control}" always; ' if cache_control else ""
        location = f"location / {{ default_type application/json; {header}return 200 '{BODY}'; }}"
        upstream = ""
    else:
        upstream = f"upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}"
        location = (
            "location / { proxy_pass http://up; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; proxy_buffering on; }'
        )
    tmp = workdir / name
    tmp.mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log crit;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  keepalive_requests 1000000;
  {upstream}
  server {{ listen 127.0.0.1:{port}; {location} }}
}}
"""
    )
    return conf


def _haproxy_conf(workdir: Path, port: int, upstream_port: int) -> Path:
    conf = workdir / "haproxy.cfg"
    conf.write_text(
        f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  server s1 127.0.0.1:{upstream_port}
"""
    )
    return conf


def _gatekeeper_conf(workdir: Path, port: int, upstream_port: int, limited: bool) -> Path:
    policy = f"bench-{uuid.uuid4().hex[:8]}"
    limits = f"\n    limits: [{{policy: {policy}, key: ip}}]" if limited else ""
    conf = workdir / f"gatekeeper-{'limited' if limited else 'plain'}.yaml"
    conf.write_text(
        f"""listener: {{host: 127.0.0.1, port: {port}, shutdown_grace: 1}}
policies:
  {policy}: {{rate: 100000000/60s, algorithm: fixed_window}}
upstreams:
  up:
    endpoints: [http://127.0.0.1:{upstream_port}]
routes:
  - name: all
    path_prefix: /
    upstream: up{limits}
"""
    )
    return conf


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def wrk(url: str, connections: int, seconds: float) -> dict[str, float]:
    """Run wrk once; returns req/s, p50 and p99 in milliseconds, and errors."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    errors = 0.0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += float(non2xx[1])
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(float(x) for x in sock.groups())
    requests = float(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors, "requests": requests}


def _worker(pid: int) -> int:
    """The process doing the work: nginx's worker (the master's child), else ``pid`` itself."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(url: str, pid: int, connections: int, seconds: float) -> dict[str, float]:
    """wrk plus the CPU time the serving process spent per request (robust on a shared,
    noisy machine where req/s depends on what else runs)."""
    before = _cpu_seconds(pid)
    result = wrk(url, connections, seconds)
    result["cpu_us"] = (_cpu_seconds(pid) - before) / max(result["requests"], 1) * 1e6
    return result


class _Procs:
    def __init__(self, log: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = log.open("ab")

    def start(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.procs.append(
            subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=self.log, env=env,
                start_new_session=True, cwd=self.log.name.rsplit("/", 1)[0],
            )
        )  # fmt: skip

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run(quick: bool) -> Report:
    """Measure every contender; see the module docstring."""
    for tool in ("wrk", "nginx", "haproxy"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise RuntimeError(f"{tool} is not installed (apt-get install wrk nginx-light haproxy)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    seconds = 3.0 if quick else 10.0
    workdir = Path(tempfile.mkdtemp(prefix="gk-bench-gw-"))
    ports = {k: free_port() for k in ("up", "nginx", "haproxy", "gk", "gk_plain", "floor")}
    procs = _Procs(workdir / "stderr.log")
    env = dict(
        os.environ,
        GATEKEEPER_REDIS_URL=REDIS_URL,
        GATEKEEPER_LOG_LEVEL="warning",
        GATEKEEPER_JWT_SECRET=uuid.uuid4().hex,
        GATEKEEPER_ADMIN_TOKEN=uuid.uuid4().hex,
        GATEKEEPER_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'gk.db'}",
    )
    # serve refuses an unmigrated database: both gateways share this one SQLite file.
    subprocess.run(
        [sys.executable, "-m", "gatekeeper", "migrate"], env=env, check=True, capture_output=True
    )
    gk = [sys.executable, "-m", "gatekeeper", "serve", "--config"]
    report = Report(
        "gateway",
        [
            "contender",
            "connections",
            "req/s",
            "p50 ms",
            "p99 ms",
            "x nginx",
            "cpu us/req",
            "errors",
        ],
    )
    try:
        procs.start([nginx, "-c", str(nginx_conf(workdir, "up", ports["up"], None))])
        procs.start([nginx, "-c", str(nginx_conf(workdir, "px", ports["nginx"], ports["up"]))])
        procs.start([haproxy, "-f", str(_haproxy_conf(workdir, ports["haproxy"], ports["up"]))])
        procs.start([*gk, str(_gatekeeper_conf(workdir, ports["gk"], ports["up"], True))], env)
        procs.start(
            [*gk, str(_gatekeeper_conf(workdir, ports["gk_plain"], ports["up"], False))], env
        )
        floor = Path(__file__).with_name("floor_proxy.py")
        procs.start([sys.executable, str(floor), str(ports["floor"]), str(ports["up"])], env)
        for name, port in ports.items():
            try:
                wait_port(port)
            except RuntimeError:
                log = (workdir / "stderr.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} did not start on port {port}:\n{log}") from None
        pids = [_worker(proc.pid) for proc in procs.procs]
        contenders = [
            ("upstream direct", ports["up"], pids[0]),
            ("nginx proxy", ports["nginx"], pids[1]),
            ("haproxy", ports["haproxy"], pids[2]),
            ("gatekeeper + redis limit", ports["gk"], pids[3]),
            ("gatekeeper, no limit", ports["gk_plain"], pids[4]),
            ("python floor (parse + relay only)", ports["floor"], pids[5]),
        ]
        for _, port, _ in contenders:  # warm up: connections, JIT-free but caches and pools
            wrk(f"http://127.0.0.1:{port}/bench", 64, 1)
        results = {}
        for name, port, pid in contenders:
            results[name] = measured(f"http://127.0.0.1:{port}/bench", pid, 64, seconds)
        nginx_rps = results["nginx proxy"]["rps"]
        for name, r in results.items():
            report.add(
                contender=name, connections=64, **{"req/s": r["rps"], "p50 ms": r["p50"],
                "p99 ms": r["p99"], "x nginx": r["rps"] / nginx_rps, "cpu us/req": r["cpu_us"],
                "errors": int(r["errors"])},
            )  # fmt: skip
        saturation = results["gatekeeper + redis limit"]["rps"]
        half: dict[str, float] | None = None
        chosen = 1
        for connections in (1, 2, 4, 8, 16):
            probe = wrk(
                f"http://127.0.0.1:{ports['gk']}/bench", connections, max(1, int(seconds // 2))
            )
            chosen, half = connections, probe
            if probe["rps"] >= 0.5 * saturation:
                break
        assert half is not None
        half = measured(f"http://127.0.0.1:{ports['gk']}/bench", pids[3], chosen, seconds)
        direct = measured(f"http://127.0.0.1:{ports['up']}/bench", pids[0], chosen, seconds)
        for name, r in (
            ("upstream direct (half load)", direct),
            ("gatekeeper + limit (half load)", half),
        ):
            report.add(
                contender=name, connections=chosen, **{"req/s": r["rps"], "p50 ms": r["p50"],
                "p99 ms": r["p99"], "x nginx": r["rps"] / nginx_rps, "cpu us/req": r["cpu_us"],
                "errors": int(r["errors"])},
            )  # fmt: skip
        added = half["p99"] - direct["p99"]
        report.meta.update(
            {"half_load_connections": chosen, "p99_added_ms": round(added, 3),
             "saturation_rps": saturation, "wrk_seconds": seconds,
             "cpu_per_request_vs_nginx": round(
                 results["gatekeeper + redis limit"]["cpu_us"] / results["nginx proxy"]["cpu_us"],
                 2)}
        )  # fmt: skip
        report.target(
            "gatekeeper + redis limit throughput / nginx proxy", saturation / nginx_rps, 0.6
        )
        floor_rps = results["python floor (parse + relay only)"]["rps"]
        report.meta["python_floor_vs_nginx"] = round(floor_rps / nginx_rps, 3)
        report.meta["gatekeeper_limited_vs_python_floor"] = round(saturation / floor_rps, 3)
        # Report "2 ms minus the added p99" so that >= 0 means the target is met.
        report.target("p99 headroom at half load: 2 ms - added p99 (ms)", 2.0 - added, 0.0)
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return report
