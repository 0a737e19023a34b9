"""Schema migrations on both engines: empty -> head -> empty, and the start-up check."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection

from gatekeeper.errors import ConfigurationError, PersistenceError
from gatekeeper.persistence import (
    Base,
    Database,
    Tenant,
    Tier,
    check_migrated,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from gatekeeper.persistence.testing import scratch_database
from tests import services

TABLES = {
    "tenants",
    "tenant_keys",
    "tiers",
    "users",
    "api_keys",
    "refresh_tokens",
    "ip_rules",
    "audit_log",
    "webhook_subscriptions",
}


@pytest.fixture(
    params=[
        pytest.param("sqlite+aiosqlite://", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def empty_database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    url = services.postgres_url() if request.param == "postgres" else request.param
    async with scratch_database(url, migrate=False) as db:
        yield db


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        names: list[str] = await conn.run_sync(lambda c: inspect(c).get_table_names())
    return set(names) - {"alembic_version"}


async def test_upgrade_from_empty_to_head_and_back_down(empty_database: Database) -> None:
    """An empty database migrates to head with every table, then downgrades to nothing."""
    db = empty_database
    assert await current_revision(db) is None
    assert await _tables(db) == set()
    await upgrade(db)
    assert await current_revision(db) == head_revision()
    assert await _tables(db) == TABLES
    await check_migrated(db)
    await downgrade(db, "base")
    assert await current_revision(db) is None
    assert await _tables(db) == set()
    await upgrade(db)  # and it can come back up again
    assert await _tables(db) == TABLES


async def test_head_schema_matches_the_models(empty_database: Database) -> None:
    """The migrations build exactly the tables, columns and indexes the models declare."""
    await upgrade(empty_database)

    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with empty_database.engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []


async def test_first_migration_seeds_the_default_tiers(sql_database: Database) -> None:
    """The four tiers of the seeds exist after migrating, with their per-minute rates."""
    async with sql_database.transaction() as session:
        tiers = {t.name: t.policies for t in (await session.scalars(select(Tier))).all()}
    assert tiers == {
        "free": [{"name": "tier-free", "rate": "5/minute", "algorithm": "sliding_log"}],
        "basic": [{"name": "tier-basic", "rate": "20/minute", "algorithm": "sliding_log"}],
        "premium": [{"name": "tier-premium", "rate": "100/minute", "algorithm": "sliding_log"}],
        "enterprise": [
            {"name": "tier-enterprise", "rate": "1000/minute", "algorithm": "sliding_log"}
        ],
    }


async def test_tenant_defaults_follow_the_waiting_room_seed(sql_database: Database) -> None:
    """A tenant inserted with only its id gets the seed's queue settings and timestamps."""
    async with sql_database.transaction() as session:
        session.add(Tenant(business_id="shop"))
    async with sql_database.transaction() as session:
        tenant = await session.get(Tenant, "shop")
    assert tenant is not None
    assert (
        tenant.admission_limit,
        tenant.admission_frequency,
        tenant.jwt_expiry_seconds,
        tenant.ready_ttl_seconds,
        tenant.ip_enqueue_limit,
        tenant.ip_enqueue_limit_interval,
        tenant.ip_status_polling_limit,
        tenant.ip_status_polling_limit_interval,
    ) == (10, 5, 120, 300, 100, 60, 60, 60)
    assert tenant.enabled is True
    assert tenant.created_at.tzinfo is not None


async def test_check_refuses_an_unmigrated_database(empty_database: Database) -> None:
    """The start-up check names the problem and the command that fixes it."""
    with pytest.raises(PersistenceError, match=r"never been migrated.*gatekeeper migrate"):
        await check_migrated(empty_database)


async def test_check_refuses_an_outdated_database(empty_database: Database) -> None:
    """A database at an older revision than head is refused too (simulated by a bogus one)."""
    await upgrade(empty_database)
    async with empty_database.engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'old0'")
    with pytest.raises(PersistenceError, match="is at revision old0"):
        await check_migrated(empty_database)


def test_unsupported_database_url_is_a_configuration_error() -> None:
    """A URL of an engine Gatekeeper does not support is rejected with the scheme named."""
    with pytest.raises(ConfigurationError, match="mysql"):
        Database("mysql://localhost/db")
    with pytest.raises(ConfigurationError, match="malformed"):
        Database("::not a url::")


async def test_unreachable_database_raises_persistence_error() -> None:
    """A database that does not answer surfaces as PersistenceError, not a driver exception."""
    db = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(PersistenceError, match=r"nobody@127\.0\.0\.1:1"):
            await current_revision(db)
    finally:
        await db.aclose()


def test_migrate_command_upgrades_checks_and_downgrades(tmp_path: Path) -> None:
    """`gatekeeper migrate` works from the command line and exits 1 on an unmigrated check."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "GATEKEEPER_DATABASE_URL": url}

    def gk(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gatekeeper", "migrate", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    checked = gk("--check")
    assert checked.returncode == 1
    assert "gatekeeper migrate" in checked.stdout
    up = gk()
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"at revision {head_revision()}" in up.stdout
    assert gk("--check").returncode == 0
    down = gk("--downgrade", "--revision", "base")
    assert down.returncode == 0
    assert "at revision None" in down.stdout
