"""Four `gatekeeper serve` processes sharing one Redis: every dashboard shows the cluster."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import redis.asyncio as aioredis

from gatekeeper.gateway.mock_backend import run_backends
from tests.servers import free_port, wait_for_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]

REPLICAS = 4
PER_REPLICA = 5
# Per client IP, shared by the cluster through Redis. A token bucket refilling one token per 6
# minutes: no window boundary can fall inside the test and let an extra request through.
LIMIT = 10


def _config(port: int, backends: list[str], policy: str) -> dict[str, Any]:
    return {
        "listener": {"host": "127.0.0.1", "port": port, "shutdown_grace": 1},
        "policies": {policy: {"rate": f"{LIMIT}/hour", "algorithm": "token_bucket"}},
        "upstreams": {"backends": {"endpoints": [{"url": url} for url in backends]}},
        "routes": [
            {
                "name": "api",
                "path_prefix": "/api",
                "upstream": "backends",
                "limits": [{"policy": policy, "key": "ip"}],
            }
        ],
    }


def _spawn(config: Path, env: dict[str, str], cwd: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """One `gatekeeper serve` replica (one process: the dashboard counts processes) writing its
    output to ``log``."""
    command = [sys.executable, "-m", "gatekeeper", "serve", "--config", str(config)]
    command += ["--workers", "1"]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
async def cluster(tmp_path: Path, redis_url: str, redis_prefix: str) -> AsyncIterator[list[str]]:
    """Four replicas on free ports, one Redis, a policy and live-stats prefix of this test."""
    backends = await run_backends(2)
    policy = f"cluster-{redis_prefix}"
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    logs = []
    try:
        for i in range(REPLICAS):
            port = free_port()
            path = tmp_path / f"gatekeeper-{i}.yaml"
            path.write_text(json.dumps(_config(port, [b.url for b in backends], policy)))
            env = {
                **os.environ,
                "GATEKEEPER_REDIS_URL": redis_url,
                "GATEKEEPER_LIVE_STATS_PREFIX": f"{redis_prefix}:live",
                "GATEKEEPER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / f'gk-{i}.db'}",
                "GATEKEEPER_LOG_LEVEL": "warning",
                "GATEKEEPER_JWT_SECRET": "cluster-test-secret-" + redis_prefix,
            }
            log = (tmp_path / f"replica-{i}.log").open("wb")
            logs.append(log)
            processes.append(_spawn(path, env, tmp_path, log))
            urls.append(f"http://127.0.0.1:{port}")
        for i, url in enumerate(urls):
            port = int(url.rsplit(":", 1)[1])
            deadline = time.monotonic() + 60
            while True:
                if processes[i].poll() is not None:
                    pytest.fail((tmp_path / f"replica-{i}.log").read_text())
                try:
                    await asyncio.to_thread(wait_for_port, port, 0.5)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        pytest.fail((tmp_path / f"replica-{i}.log").read_text()[-3000:])
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
        for backend in backends:
            await backend.stop()
        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"*:{policy}*", count=1000)]
            if keys:
                await client.unlink(*keys)
        finally:
            await client.aclose()


async def test_four_replicas_show_cluster_wide_numbers(cluster: list[str]) -> None:
    """Each replica serves 5 requests of one client; every replica's dashboard shows all 20."""
    async with httpx.AsyncClient(timeout=10) as client:
        codes = []
        for url in cluster:
            codes += [(await client.get(url + "/api/info")).status_code for _ in range(PER_REPLICA)]
        # Not asserted here: that exactly LIMIT pass. A replica's first decisions may miss the
        # limiter's deadline on a loaded machine and fail open (the engine's tests cover that);
        # what matters here is that every dashboard adds up what the four replicas did.
        allowed, limited = codes.count(200), codes.count(429)
        assert allowed + limited == REPLICAS * PER_REPLICA

        views: list[dict[str, Any]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # replicas publish every 0.5 s, snapshot every 1 s
            views = [(await client.get(url + "/api/metrics")).json() for url in cluster]
            if all(v["requests"] == REPLICAS * PER_REPLICA and v["replicas"] == 4 for v in views):
                break
            await asyncio.sleep(0.25)
        for view in views:
            assert view["mode"] == "cluster"
            assert view["replicas"] == REPLICAS
            assert view["requests"] == REPLICAS * PER_REPLICA
            assert view["limited"] == limited
            assert view["status"] == {k: v for k, v in (("2xx", allowed), ("4xx", limited)) if v}
            (policy,) = view["policies"].values()
            assert policy == {k: v for k, v in (("allowed", allowed), ("limited", limited)) if v}

        # Prometheus, by contrast, is per process: each replica counts only its own requests.
        own = [(await client.get(url + "/metrics")).text for url in cluster]
    for text in own:
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("gatekeeper_http_requests_total{")
        )
        assert counted == PER_REPLICA
