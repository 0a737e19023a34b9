"""End to end through real `gatekeeper serve` processes: register, create a key, call a limited
route until 429, upgrade the tier as admin, and see the higher limit on another replica with no
restart. Also: serve refuses a database that is not migrated."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.servers import free_port, launch_replica

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
PASSWORD = "correct horse battery"


def _env(tmp_path: Path, database: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GATEKEEPER_REDIS_URL": services.redis_url(),
        "GATEKEEPER_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "GATEKEEPER_JWT_SECRET": "e2e:jwt-secret-shared-by-replicas-0123",
        "GATEKEEPER_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEKEEPER_LOG_LEVEL": "warning",
    }


def _launch(tmp_path: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], int]:
    """A replica with no proxied routes: the built-in API only."""
    return launch_replica(tmp_path, env, name, {})


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[str]]:
    """Two replicas sharing one migrated database file and the test Redis."""
    database = tmp_path / "shared.db"
    env = _env(tmp_path, database)
    migrated = subprocess.run(
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
            processes.append(_launch(tmp_path, env, f"replica-{i}"))
        yield [f"http://127.0.0.1:{port}" for _, port in processes]
    finally:
        for process, _ in processes:
            process.terminate()
        for process, _ in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for i in range(2):  # shown by pytest only when the test failed
            log = tmp_path / f"replica-{i}.log"
            if log.exists():
                print(f"--- replica-{i} ---\n{log.read_text()[-2000:]}")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


async def test_tier_upgrade_applies_on_another_replica_without_restart(
    replicas: list[str], client: httpx.AsyncClient
) -> None:
    """Free tier (5/min) is enforced across both replicas; after the admin upgrades the user
    on replica A, replica B admits the key again under premium (100/min) within a second."""
    a, b = replicas
    email = f"e2e-{os.getpid()}-{time.time_ns()}@example.com"
    registered = await client.post(
        f"{a}/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert registered.status_code == 201, registered.text
    access = registered.json()["access_token"]
    created = await client.post(
        f"{a}/auth/create_api_key",
        json={"name": "e2e"},
        headers={"Authorization": f"Bearer {access}"},
    )
    assert created.status_code == 201, created.text
    key = {"X-API-Key": created.json()["api_key"]}

    statuses = []
    for url in (a, a, a, b, b, b):  # the limit is shared: 5 in total, wherever they land
        statuses.append((await client.get(f"{url}/data", headers=key)).status_code)
    assert statuses == [200, 200, 200, 200, 200, 429]
    denied = await client.get(f"{b}/data", headers=key)
    assert denied.status_code == 429
    assert int(denied.headers["retry-after"]) >= 1
    assert denied.json()["tier"] == "free"

    upgrade = await client.post(
        f"{a}/admin/upgrade_tier",
        json={"api_key": key["X-API-Key"], "tier": "premium"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert upgrade.status_code == 200, upgrade.text
    started = time.monotonic()
    while True:
        response = await client.get(f"{b}/data", headers=key)
        if response.status_code == 200:
            break
        assert time.monotonic() - started < 1.0, "the upgrade did not reach replica B in 1 s"
        await asyncio.sleep(0.02)
    body = response.json()
    assert body["tier"] == "premium"
    assert body["limit"] == 100
    assert body["data"] == {"message": "protected sample data"}
    audit = await client.get(
        f"{b}/admin/audit?action=user.tier", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert audit.json()["entries"][0]["detail"] == {"old": "free", "new": "premium"}


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    """An existing database whose schema was never migrated stops `serve` with the fix named."""
    database = tmp_path / "old.db"
    database.write_bytes(b"")  # exists, but holds no schema
    env = _env(tmp_path, database)
    config = tmp_path / "gk.yaml"
    config.write_text(json.dumps({"listener": {"host": "127.0.0.1", "port": free_port()}}))
    result = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "serve", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "never been migrated" in result.stderr
    assert "gatekeeper migrate" in result.stderr
