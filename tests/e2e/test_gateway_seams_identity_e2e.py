"""The identity issue's flow on a PROXIED route, through two real `gatekeeper serve` processes
sharing Redis and the database: register, create a key, call an ``auth: api_key`` route until
429, upgrade the tier as admin, and see the higher limit on the other replica without restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gatekeeper.gateway.mock_backend import MockBackend, run_backends
from tests import services
from tests.servers import launch_replica

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ADMIN_TOKEN = "seams-e2e-admin-token-0123456789abcdef"
PASSWORD = "correct horse battery"


def _env(database: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GATEKEEPER_REDIS_URL": services.redis_url(),
        "GATEKEEPER_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "GATEKEEPER_JWT_SECRET": "seams-e2e:jwt-secret-shared-by-replicas",
        "GATEKEEPER_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEKEEPER_LOG_LEVEL": "warning",
    }


def _launch(
    tmp_path: Path, env: dict[str, str], name: str, backend: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a replica whose ``/shop`` route needs an API key or a JWT."""
    config = {
        "upstreams": {"shop": {"endpoints": [{"url": backend}]}},
        "routes": [{"name": "shop", "path_prefix": "/shop", "upstream": "shop", "auth": "any"}],
    }
    return launch_replica(tmp_path, env, name, config)


@pytest.fixture
async def backend() -> AsyncIterator[MockBackend]:
    """One mock backend on a free port, in the test's loop."""
    (started,) = await run_backends(1)
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def replicas(tmp_path: Path, backend: MockBackend) -> AsyncIterator[list[str]]:
    """Two replicas sharing one migrated database file and the test Redis."""
    env = _env(tmp_path / "shared.db")
    migrated = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gatekeeper", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    processes: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for i in range(2):
            processes.append(
                await asyncio.to_thread(_launch, tmp_path, env, f"replica-{i}", backend.url)
            )
        yield [f"http://127.0.0.1:{port}" for _, port in processes]
    finally:
        for process, _ in processes:
            process.terminate()
        for process, _ in processes:
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for i in range(2):  # shown by pytest only when the test failed
            log = tmp_path / f"replica-{i}.log"
            if log.exists():
                print(f"--- replica-{i} ---\n{log.read_text()[-2000:]}")


async def test_tier_upgrade_on_a_proxied_route_reaches_the_other_replica(
    replicas: list[str],
) -> None:
    """Free tier (5/min) is enforced on the proxied /shop across both replicas; after the admin
    upgrades the key's user on replica A, replica B proxies it again under premium (100/min)."""
    a, b = replicas
    async with httpx.AsyncClient(timeout=10) as client:
        email = f"seams-{os.getpid()}-{time.time_ns()}@example.com"
        registered = await client.post(
            f"{a}/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        access = registered.json()["access_token"]
        assert (await client.get(f"{a}/shop/cart")).status_code == 401
        created = await client.post(
            f"{a}/auth/create_api_key",
            json={"name": "e2e"},
            headers={"Authorization": f"Bearer {access}"},
        )
        assert created.status_code == 201, created.text
        key = {"X-API-Key": created.json()["api_key"]}

        statuses = []
        for url in (a, a, a, b, b, b):  # the limit is shared: 5 in total, wherever they land
            statuses.append((await client.get(f"{url}/shop/cart", headers=key)).status_code)
        assert statuses == [200, 200, 200, 200, 200, 429]
        denied = await client.get(f"{b}/shop/cart", headers=key)
        assert denied.status_code == 429
        assert int(denied.headers["retry-after"]) >= 1
        assert denied.json()["tier"] == "free"
        assert "tier-free" in denied.headers["ratelimit-policy"]

        upgrade = await client.post(
            f"{a}/admin/upgrade_tier",
            json={"api_key": key["X-API-Key"], "tier": "premium"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert upgrade.status_code == 200, upgrade.text
        started = time.monotonic()
        while True:
            response = await client.get(f"{b}/shop/cart", headers=key)
            if response.status_code == 200:
                break
            assert time.monotonic() - started < 1.0, "the upgrade did not reach replica B in 1 s"
            await asyncio.sleep(0.02)
        assert '"tier-premium";q=100' in response.headers["ratelimit-policy"]
