"""``gatekeeper worker`` on a Redis Cluster URL: it starts (issue 20: it exited with redis-py's
scheme ValueError) and admits a tenant's queue there; a malformed cluster URL is refused with a
clear message and exit code 2."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gatekeeper.persistence import Database
from gatekeeper.persistence.migrate import upgrade
from gatekeeper.redis_client import redis_from_url
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.testing import patient_guard
from tests.cluster import RedisClusterServers

pytestmark = [pytest.mark.redis, pytest.mark.slow]

T = "cluster-sale"


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gatekeeper", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_the_worker_admits_on_a_cluster(
    tmp_path: Path, redis_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    """The worker started with ``redis+cluster://`` takes the lease and admits queued users."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}"
    database = Database(database_url)
    await upgrade(database)
    await database.aclose()
    client = redis_from_url(redis_cluster.url)
    store = RedisStore(client, prefix=redis_prefix, owns_client=True, guard=patient_guard())
    env = {
        **os.environ,
        "GATEKEEPER_REDIS_URL": redis_cluster.url,
        "GATEKEEPER_DATABASE_URL": database_url,
        "GATEKEEPER_BUSINESS_IDS": T,
        "GATEKEEPER_WAITINGROOM_REDIS_PREFIX": redis_prefix,
        "GATEKEEPER_WAITINGROOM_LEASE_SECONDS": "1",
    }
    proc = _spawn(env)
    try:
        for i in range(5):
            await store.enqueue(T, f"user-{i}", time.time(), 60)
        deadline = time.monotonic() + 30
        while (await store.stats(T, time.time())).ready < 5:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            assert time.monotonic() < deadline, "the worker admitted nobody"
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        await store.aclose()


def test_a_malformed_cluster_url_is_refused_by_name() -> None:
    """A node that is not host:port: exit code 2 and a message naming it, no traceback."""
    env = {**os.environ, "GATEKEEPER_REDIS_URL": "redis+cluster://127.0.0.1:1,nohost"}
    done = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "worker"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "'nohost' is not host:port" in done.stderr
    assert "Traceback" not in done.stderr
