"""Issue 20: a replica's first requests must not fail open because its connections are cold.

A ``gatekeeper serve`` process has just reported ready; 300 clients, connected beforehand, send
one request each at the same moment, against a limit of 100 per minute and the limiter's default
20 ms deadline: exactly 100 are admitted, on one Redis and on a Redis Cluster (before, on the
cluster, connecting and loading the script on the key's node overran the deadline, the breaker
opened and all 300 passed). The start-up connects to every primary and loads the scripts there
before the replica reports ready.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.gateway.config import parse_config
from gatekeeper.gateway.mock_backend import MockBackend, run_backends
from gatekeeper.limits.storage._script import load_script
from gatekeeper.redis_client import is_cluster, is_cluster_url, redis_from_url
from gatekeeper.settings import Settings
from tests.integration.gateway_fixtures import config_for
from tests.integration.gateway_process import GatewayProcess

pytestmark = [pytest.mark.redis, pytest.mark.slow]

LIMIT = 100
CLIENTS = 3 * LIMIT


@pytest.fixture
async def backend() -> Iterator[MockBackend]:
    (started,) = await run_backends(1)
    yield started
    await started.stop()


async def _burst(port: int, count: int) -> list[int]:
    """Open ``count`` connections, then send one request on each at once; the statuses."""
    pairs = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(count))
    )
    request = b"GET /api/x HTTP/1.1\r\nHost: gatekeeper.test\r\nConnection: close\r\n\r\n"
    for _, writer in pairs:
        writer.write(request)

    async def status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        line = await reader.readline()
        await reader.read()
        writer.close()
        return int(line.split()[1])

    async with asyncio.timeout(60):
        return await asyncio.gather(*(status(r, w) for r, w in pairs))


async def _attempt(url: str, backend: MockBackend, tmp_path: Path) -> tuple[int, int, str]:
    """A fresh replica (cold), a fresh key, one burst: (admitted, denied, the replica's log)."""
    policy = f"cold-{uuid.uuid4().hex[:8]}"  # a key no warm-up has touched
    data = config_for([backend.url])
    data["policies"] = {policy: {"rate": f"{LIMIT}/minute", "algorithm": "fixed_window"}}
    data["routes"][0]["limits"] = [policy]
    assert "limiter" not in data  # the default deadline (20 ms), not a test's own
    env = {"GATEKEEPER_REDIS_URL": url, "GATEKEEPER_WORKERS": "1"}
    await asyncio.to_thread(tmp_path.mkdir)
    gateway = GatewayProcess(tmp_path, data, env).start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            ready = await http.get("/ready")  # the listener binds only after the warm-up
            assert ready.status_code == 200, ready.text
        codes = await _burst(gateway.port, CLIENTS)
    finally:
        gateway.stop()
    return codes.count(200), codes.count(429), gateway.log.read_text()


async def test_a_cold_replica_admits_exactly_the_limit(
    any_redis_url: str, backend: MockBackend, tmp_path: Path
) -> None:
    """Ready, then at once 3 x LIMIT concurrent requests of one client: exactly LIMIT pass.

    Up to 3 attempts, each on a fresh (cold) replica: a cold start failed every time (4 runs
    of 4 in the issue, 5 of 5 here before the fix), while on this shared 2-core machine a
    scheduling pause of the replica can also overrun 20 ms now and then, warm or not.
    """
    results = []
    for attempt in range(3):
        admitted, denied, log = await _attempt(any_redis_url, backend, tmp_path / str(attempt))
        results.append((admitted, denied))
        if (admitted, denied) == (LIMIT, CLIENTS - LIMIT):
            return
    pytest.fail(f"admitted/denied per attempt: {results}; last log: {log[-2000:]}")


async def _primaries(url: str) -> list[aioredis.Redis]:
    """A plain client to each server that holds keys: every primary of a cluster."""
    client = redis_from_url(url)
    if not is_cluster(client):
        return [client]
    await client.initialize()
    nodes = [(n.host, n.port) for n in client.get_primaries()]
    await client.aclose()
    return [aioredis.Redis(host=host, port=port) for host, port in nodes]


async def test_ready_means_connected_and_scripts_loaded_on_every_primary(
    any_redis_url: str,
) -> None:
    """Before the first request, a started replica holds at least 4 connections to every
    primary (named by ``client_name``), every connection of the limiter's lean pool is open,
    and the limit scripts are loaded on each primary."""
    name = f"gk-warm-{uuid.uuid4().hex[:8]}"
    url = f"{any_redis_url}{'&' if '?' in any_redis_url else '?'}client_name={name}"
    scripts = [load_script("decide").sha]
    if is_cluster_url(url):
        scripts.append(load_script("refund").sha)
    data = config_for(["http://127.0.0.1:9"])
    settings = Settings(redis_url=url, admin_token=SecretStr("x" * 32))
    gateway = Gateway(settings, parse_config(data), port=0, components=())
    await gateway.start()
    primaries = await _primaries(any_redis_url)
    try:
        lean = getattr(gateway.runtime.storage, "lean", None)  # one Redis: the fast path's pool
        if lean is not None:
            assert lean.opened == lean.size
        for primary in primaries:
            assert await primary.script_exists(*scripts) == [True] * len(scripts)
            clients = await primary.client_list()
            assert sum(c["name"] == name for c in clients) >= 4, clients
    finally:
        await gateway.stop()
        for primary in primaries:
            await primary.aclose()
