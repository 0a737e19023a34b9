"""The gateway against nginx, a Kong-like nginx + Lua, HAProxy and the Python floor, in one run.

Setup: one upstream (nginx, 1 worker, a fixed 40-byte JSON answer) and the ways to reach it:

- direct; nginx as a reverse proxy with upstream keep-alive; HAProxy (1 thread,
  ``http-reuse always``); the Python floor (``bench/floor_proxy.py``: the same uvloop +
  httptools, parsing and relaying only, the ceiling of any Python design on this stack);
- **Kong-like**: nginx with ``libnginx-mod-http-lua`` doing what Kong's and APISIX's Redis rate
  limiting does per request: ``INCR`` and ``EXPIRE`` pipelined over ``ngx.socket.tcp`` (kept
  alive), then the proxying (Debian has no lua-resty-redis, so the RESP is written by hand);
- Gatekeeper as users run it, ``gatekeeper serve --config``, with a Redis-backed limit on every
  request high enough to admit everything: with one worker (``--workers 1``, the per-process
  figure) and with its default (one worker per core); one worker without a limit, to show
  the limiter's cost; and ``GET /health`` on the one-worker replica (it must cost no more than
  a proxied request). Logging at ``warning`` (no access line per request), as nginx's
  ``access_log off``.

Every proxy runs one worker/process unless said. Throughput: ``wrk -t1 -c64`` (closed loop,
saturating). The machine is shared and noisy, so contenders alternate over several rounds (the
order rotating) and the table gives medians; each row also reports the CPU time its processes
spent per request (from /proc, summed over the contender's processes), the figure least
disturbed by other load. Half load: the gateway's p99 at about half its saturation throughput
against the upstream's at the same connection count ("p99 added").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from subprocess import Popen
from urllib.parse import urlsplit

from bench.net import free_port, wait_port
from bench.report import Report
from bench.serving import Contender, Procs, measure, median, rounds, wrk

__all__ = ["gatekeeper_env", "nginx_conf", "run", "wrk"]

REDIS_URL = os.environ.get("GATEKEEPER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
BODY = '{"backend":"upstream","ok":true,"n":12345}'
CONNECTIONS = 64
_LUA_MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")


def nginx_conf(
    workdir: Path,
    name: str,
    port: int,
    upstream_port: int | None,
    cache_control: str = "",
    *,
    lua_limit: str = "",
) -> Path:
    """nginx as the origin (``upstream_port`` None: answers BODY itself, with ``cache_control``
    if given) or as a keep-alive reverse proxy to ``upstream_port`` (with ``lua_limit`` as its
    ``access_by_lua_block``, if given)."""
    modules = ""
    if upstream_port is None:
        header = f'add_header Cache-Control "{cache_control}" always; ' if cache_control else ""
        location = f"location / {{ default_type application/json; {header}return 200 '{BODY}'; }}"
        upstream = ""
    else:
        upstream = f"upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}"
        access = f"access_by_lua_block {{ {lua_limit} }}" if lua_limit else ""
        location = (
            f"location / {{ {access} proxy_pass http://up; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; proxy_buffering on; }'
        )
        if lua_limit:
            modules = "".join(
                f"load_module /usr/lib/nginx/modules/{module};\n" for module in _LUA_MODULES
            )
    tmp = workdir / name
    tmp.mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""{modules}worker_processes 1;
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


def kong_like_limit(redis_url: str, prefix: str, limit: int = 1_000_000_000) -> str:
    """The Lua of the Kong-like contender: per client IP, INCR and EXPIRE pipelined to Redis
    over a kept-alive cosocket, 429 past ``limit``, fail-open if Redis does not answer."""
    parts = urlsplit(redis_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    database = (parts.path or "/0").lstrip("/") or "0"
    return (
        "local sock = ngx.socket.tcp() sock:settimeout(200) "
        f'local ok = sock:connect("{host}", {port}) if not ok then return end '
        "if sock:getreusedtimes() == 0 then "
        f'sock:send("*2\\r\\n$6\\r\\nSELECT\\r\\n${len(database)}\\r\\n{database}\\r\\n") '
        'sock:receive("*l") end '
        f'local key = "{prefix}:" .. ngx.var.remote_addr '
        'local cmd = "*2\\r\\n$4\\r\\nINCR\\r\\n$" .. #key .. "\\r\\n" .. key .. "\\r\\n" '
        '.. "*3\\r\\n$6\\r\\nEXPIRE\\r\\n$" .. #key .. "\\r\\n" .. key .. "\\r\\n$2\\r\\n60\\r\\n" '
        "local sent = sock:send(cmd) if not sent then return end "
        'local count = sock:receive("*l") sock:receive("*l") sock:setkeepalive(10000, 64) '
        f"if (tonumber(string.sub(count or ':0', 2)) or 0) > {limit} then return ngx.exit(429) end"
    )


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


def gatekeeper_conf(
    workdir: Path, name: str, port: int, upstream_port: int, policy: str | None
) -> Path:
    """A gateway with one route to the upstream, limited by ``policy`` (per IP) if given."""
    limits = f"\n    limits: [{{policy: {policy}, key: ip}}]" if policy else ""
    policies = f"policies:\n  {policy}: {{rate: 100000000/60s, algorithm: fixed_window}}\n"
    conf = workdir / f"{name}.yaml"
    conf.write_text(
        f"""listener: {{host: 127.0.0.1, port: {port}, shutdown_grace: 1}}
{policies if policy else ""}upstreams:
  up:
    endpoints: [http://127.0.0.1:{upstream_port}]
routes:
  - name: all
    path_prefix: /
    upstream: up{limits}
"""
    )
    return conf


def gatekeeper_env(workdir: Path) -> dict[str, str]:
    """The environment of a replica as the docs set one up (Redis, secrets, a database)."""
    return dict(
        os.environ,
        GATEKEEPER_REDIS_URL=REDIS_URL,
        GATEKEEPER_LOG_LEVEL="warning",
        GATEKEEPER_JWT_SECRET=uuid.uuid4().hex,
        GATEKEEPER_ADMIN_TOKEN=uuid.uuid4().hex,
        GATEKEEPER_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'gk.db'}",
    )


def _tool(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else ""
    )
    if not found:
        raise RuntimeError(f"{name} is not installed (make bench provisions it)")
    return found


def run(quick: bool) -> Report:
    """Measure every contender; see the module docstring."""
    nginx, haproxy = _tool("nginx"), _tool("haproxy")
    _tool("wrk")
    seconds = 3.0 if quick else 8.0
    count = 1 if quick else 3
    workdir = Path(tempfile.mkdtemp(prefix="gk-bench-gw-"))
    names = ("up", "nginx", "kong", "haproxy", "floor", "gk1", "gkn", "gk_plain")
    ports = {name: free_port() for name in names}
    procs = Procs(workdir / "stderr.log")
    env = gatekeeper_env(workdir)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    gk = [sys.executable, "-m", "gatekeeper", "serve", "--config"]
    report = Report(
        "gateway",
        ["contender", "connections", "req/s", "p50 ms", "p99 ms", "x nginx", "x kong-like",
         "cpu us/req", "processes", "errors"],
    )  # fmt: skip
    try:
        # serve refuses an unmigrated database: the gateways share this one SQLite file.
        subprocess.run(
            [sys.executable, "-m", "gatekeeper", "migrate"], env=env, check=True,
            capture_output=True,
        )  # fmt: skip

        def gatekeeper(name: str, policy: str | None, *flags: str) -> Popen[bytes]:
            conf = gatekeeper_conf(workdir, name, ports[name], ports["up"], policy)
            return procs.start([*gk, str(conf), *flags], env)

        def proxy(name: str, lua: str = "") -> Popen[bytes]:
            conf = nginx_conf(workdir, name, ports[name], ports["up"], lua_limit=lua)
            return procs.start([nginx, "-c", str(conf)])

        floor = [sys.executable, str(Path(__file__).with_name("floor_proxy.py"))]
        started = {
            "up": procs.start([nginx, "-c", str(nginx_conf(workdir, "up", ports["up"], None))]),
            "nginx": proxy("nginx"),
            "kong": proxy("kong", kong_like_limit(REDIS_URL, f"{prefix}-kong")),
            "haproxy": procs.start(
                [haproxy, "-f", str(_haproxy_conf(workdir, ports["haproxy"], ports["up"]))]
            ),
            "floor": procs.start([*floor, str(ports["floor"]), str(ports["up"])], env),
            "gk1": gatekeeper("gk1", f"{prefix}-1", "--workers", "1"),
            "gkn": gatekeeper("gkn", f"{prefix}-n"),  # its default: one worker per core
            "gk_plain": gatekeeper("gk_plain", None, "--workers", "1"),
        }
        for name, port in ports.items():
            try:
                wait_port(port)
            except RuntimeError:
                raise RuntimeError(f"{name} did not start on {port}:\n{procs.tail()}") from None
        workers = os.cpu_count() or 1

        def url(name: str) -> str:
            return f"http://127.0.0.1:{ports[name]}/bench"

        contenders = [
            Contender("upstream direct", url("up"), started["up"].pid),
            Contender("nginx proxy", url("nginx"), started["nginx"].pid),
            Contender(
                "nginx + lua redis INCR+EXPIRE (kong-like)", url("kong"), started["kong"].pid
            ),
            Contender("haproxy", url("haproxy"), started["haproxy"].pid),
            Contender("python floor (parse + relay only)", url("floor"), started["floor"].pid),
            Contender("gatekeeper + redis limit, 1 worker", url("gk1"), started["gk1"].pid),
            Contender(
                f"gatekeeper + redis limit, default ({workers} workers)",
                url("gkn"),
                started["gkn"].pid,
            ),
            Contender("gatekeeper, no limit, 1 worker", url("gk_plain"), started["gk_plain"].pid),
            # Issue 14: /health must not cost more than a proxied request.
            Contender(
                "gatekeeper GET /health, 1 worker",
                f"http://127.0.0.1:{ports['gk1']}/health",
                started["gk1"].pid,
            ),
        ]
        for contender in contenders:  # warm up: connections, pools, caches
            wrk(contender.url, CONNECTIONS, 2)
            if wrk(contender.url, 1, 1)["errors"]:
                raise RuntimeError(f"{contender.name} answers errors:\n{procs.tail()}")
        samples = rounds(contenders, count, lambda c: measure(c, CONNECTIONS, seconds))
        results = {name: median(s) for name, s in samples.items()}
        nginx_rps = results["nginx proxy"]["rps"]
        kong_rps = results["nginx + lua redis INCR+EXPIRE (kong-like)"]["rps"]
        for name, r in results.items():
            _row(report, name, CONNECTIONS, r, nginx_rps, kong_rps)
        one = results["gatekeeper + redis limit, 1 worker"]
        many = results[contenders[6].name]
        # Half load: the smallest connection count reaching half of one worker's saturation.
        gk1 = contenders[5]
        chosen = 1
        for connections in (1, 2, 4, 8, 16):
            chosen = connections
            if wrk(gk1.url, connections, max(1, seconds // 2))["rps"] >= 0.5 * one["rps"]:
                break
        half = median([measure(gk1, chosen, seconds) for _ in range(count)])
        direct = median([measure(contenders[0], chosen, seconds) for _ in range(count)])
        _row(report, "upstream direct (half load)", chosen, direct, nginx_rps, kong_rps)
        _row(report, "gatekeeper + limit, 1 worker (half load)", chosen, half, nginx_rps, kong_rps)
        added = half["p99"] - direct["p99"]
        report.meta.update(
            {"rounds": count, "wrk_seconds": seconds, "connections": CONNECTIONS,
             "half_load_connections": chosen, "p99_added_ms": round(added, 3),
             "default_workers": workers, "load_average": list(os.getloadavg()),
             "samples": {name: [round(s["rps"]) for s in ss] for name, ss in samples.items()}}
        )  # fmt: skip
        report.target("gatekeeper + redis limit, 1 worker / kong-like", one["rps"] / kong_rps, 0.6)
        report.target(
            f"gatekeeper default ({workers} workers) / 1 worker", many["rps"] / one["rps"], 1.25
        )
        report.target("p99 headroom at half load: 2 ms - added p99 (ms)", 2.0 - added, 0.0)
        health = results["gatekeeper GET /health, 1 worker"]
        report.target(
            "CPU of a proxied, limited GET / CPU of GET /health (>= 1: /health is cheaper)",
            one["cpu_us"] / health["cpu_us"],
            1.0,
        )
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        _cleanup_redis(prefix)
    return report


def _row(
    report: Report,
    name: str,
    connections: int,
    r: dict[str, float],
    nginx_rps: float,
    kong_rps: float,
) -> None:
    report.add(
        contender=name, connections=connections,
        **{"req/s": r["rps"], "p50 ms": r["p50"], "p99 ms": r["p99"],
           "x nginx": r["rps"] / nginx_rps, "x kong-like": r["rps"] / kong_rps,
           "cpu us/req": r["cpu_us"], "processes": int(r["processes"]),
           "errors": int(r["errors"])},
    )  # fmt: skip


def _cleanup_redis(prefix: str) -> None:
    """Remove the benchmark's keys (never the rest of the shared Redis)."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.unlink(*keys)
        client.close()
    except Exception:  # cleanup is best effort: the keys expire on their own
        pass
