"""A/B: this tree's gateway against an earlier commit's, CPU per request, alternating rounds.

The one-path redesign (issue 15) must cost no CPU: the serving process's CPU time per request,
``this tree`` against ``GATEKEEPER_BENCH_BASE`` (default ``f7beffc``, the last commit before it),
must stay within +5% on

- a GET through a route with a Redis-backed limit (what most requests are), and
- a cache hit from the memory store.

Both versions run ``gatekeeper serve`` with one process (the base has no workers; this tree
with ``--workers 1``) in front of the same nginx origin, the base from a temporary git worktree
of that commit on the same interpreter and dependencies. Rounds alternate between the versions
(the order flips each round) and the table gives medians.
"""

from __future__ import annotations

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
from bench.serving import Contender, Procs, measure, median, rounds, wrk

BASE = os.environ.get("GATEKEEPER_BENCH_BASE", "f7beffc")
ROOT = Path(__file__).resolve().parents[1]
CONNECTIONS = 64


def _config(workdir: Path, name: str, port: int, upstream: int, policy: str) -> Path:
    conf = workdir / f"{name}.yaml"
    conf.write_text(
        f"""listener: {{host: 127.0.0.1, port: {port}, shutdown_grace: 1}}
policies:
  {policy}: {{rate: 100000000/60s, algorithm: fixed_window}}
upstreams:
  up:
    endpoints: [http://127.0.0.1:{upstream}]
routes:
  - name: limited
    path_prefix: /limited
    upstream: up
    limits: [{{policy: {policy}, key: ip}}]
  - name: cached
    path_prefix: /cached
    upstream: up
    cache: true
"""
    )
    return conf


def _worktree(workdir: Path) -> Path:
    tree = workdir / "base"
    try:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), BASE],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise RuntimeError(f"cannot check out the base commit {BASE}: {detail}") from exc
    return tree


def run(quick: bool) -> Report:
    """Measure both versions on both requests; see the module docstring."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    seconds = 3.0 if quick else 8.0
    count = 2 if quick else 6
    workdir = Path(tempfile.mkdtemp(prefix="gk-bench-ab-"))
    procs = Procs(workdir / "stderr.log")
    prefix = f"bench-ab-{uuid.uuid4().hex[:8]}"
    tree: Path | None = None
    report = Report("ab", ["request", "version", "req/s", "p99 ms", "cpu us/req", "cpu vs base"])
    try:
        tree = _worktree(workdir)
        up = free_port()
        procs.start([nginx, "-c", str(nginx_conf(workdir, "up", up, None, "max-age=3600"))])
        versions = {"base": tree / "src", "this tree": ROOT / "src"}
        contenders: dict[str, int] = {}
        ports: dict[str, int] = {}
        for version, src in versions.items():
            home = workdir / f"env-{version.replace(' ', '-')}"
            home.mkdir()
            env = gatekeeper_env(home)
            env["PYTHONPATH"] = str(src)
            gk = [sys.executable, "-m", "gatekeeper"]
            subprocess.run([*gk, "migrate"], env=env, check=True, capture_output=True)
            port = ports[version] = free_port()
            name = f"{prefix}-{version.replace(' ', '-')}"
            args = [*gk, "serve", "--config", str(_config(workdir, name, port, up, name))]
            if version != "base":
                args += ["--workers", "1"]
            contenders[version] = procs.start(args, env).pid
        wait_port(up)
        for version, port in ports.items():
            try:
                wait_port(port)
            except RuntimeError:
                raise RuntimeError(f"{version} did not start:\n{procs.tail()}") from None
        base_cpu: dict[str, float] = {}
        for request in ("limited", "cached"):
            pair = [
                Contender(version, f"http://127.0.0.1:{port}/{request}/x", contenders[version])
                for version, port in ports.items()
            ]
            for contender in pair:
                wrk(contender.url, CONNECTIONS, 2)  # warm up (and store the cached answer)
            samples = rounds(pair, count, lambda c: measure(c, CONNECTIONS, seconds))
            for version, runs in samples.items():
                m = median(runs)
                if version == "base":
                    base_cpu[request] = m["cpu_us"]
                report.add(
                    request=request, version=version,
                    **{"req/s": m["rps"], "p99 ms": m["p99"], "cpu us/req": m["cpu_us"],
                       "cpu vs base": m["cpu_us"] / base_cpu[request]},
                )  # fmt: skip
                if version != "base":
                    report.target(
                        f"{request}: base cpu / this tree's cpu (>= 0.952 is within +5%)",
                        base_cpu[request] / m["cpu_us"],
                        1 / 1.05,
                    )
            report.meta[f"{request}_samples_cpu_us"] = {
                version: [round(s["cpu_us"], 1) for s in runs] for version, runs in samples.items()
            }
        report.meta.update({"base": BASE, "rounds": count, "wrk_seconds": seconds})
    finally:
        procs.stop()
        if tree is not None:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
            )
        shutil.rmtree(workdir, ignore_errors=True)
        _cleanup_redis(prefix)
    return report
