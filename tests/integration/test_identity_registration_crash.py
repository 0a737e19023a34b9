"""Registration is atomic: a ``gatekeeper serve`` killed with SIGKILL in the middle of many
registrations leaves no user without the session that registration issued."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway_process import GatewayProcess

pytestmark = pytest.mark.slow

CONCURRENCY = 16


def _counts(database: Path) -> tuple[int, list[str]]:
    """The number of users, and those without a refresh token."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
        users = db.execute("SELECT count(*) FROM users").fetchone()[0]
        orphans = db.execute(
            "SELECT email FROM users WHERE id NOT IN (SELECT user_id FROM refresh_tokens)"
        ).fetchall()
    return int(users), [row[0] for row in orphans]


async def _register_until_killed(gateway: GatewayProcess, database: Path, kill_at: int) -> None:
    """Keep CONCURRENCY registrations in flight (each from its own address, through the trusted
    proxy, so that the per-IP registration limit does not stop them); SIGKILL the process once
    ``kill_at`` users are committed."""
    numbers = itertools.count()
    killed = asyncio.Event()

    async def client(http: httpx.AsyncClient) -> None:
        while not killed.is_set():
            n = next(numbers)
            headers = {"x-forwarded-for": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"}
            body = {"email": f"user{n}@example.com", "password": "correct horse battery"}
            try:
                await http.post("/auth/register", json=body, headers=headers)
            except httpx.HTTPError:
                return  # the process is gone

    async def killer() -> None:
        for _ in range(600):  # bounded: at most 60 s
            users, _ = _counts(database)
            if users >= kill_at:
                break
            await asyncio.sleep(0.1)
        gateway.signal(signal.SIGKILL)
        killed.set()

    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        await asyncio.gather(killer(), *(client(http) for _ in range(CONCURRENCY)))


async def test_a_killed_process_leaves_no_user_without_a_session(tmp_path: Path) -> None:
    """Three SIGKILLs during bursts of concurrent registrations: every committed user has the
    refresh token of their first session (one transaction per registration)."""
    config = {
        "trusted_proxies": ["127.0.0.1/32"],
        "upstreams": {"backends": {"endpoints": [{"host": "127.0.0.1", "port": 9}]}},
        "routes": [{"name": "api", "path_prefix": "/api/info", "upstream": "backends"}],
    }
    database = tmp_path / "gk.db"
    total = 0
    for round_ in range(3):
        gateway = GatewayProcess(tmp_path, config).start()
        try:
            await _register_until_killed(gateway, database, kill_at=total + 20)
            assert gateway.process is not None
            assert gateway.process.wait(10) == -signal.SIGKILL
        finally:
            gateway.stop()
        total, orphans = _counts(database)
        assert total >= 20 * (round_ + 1)
        assert orphans == [], f"{len(orphans)} of {total} users have no session"
