"""Schema migrations: upgrade, downgrade, and the check ``serve`` runs before it starts.

Alembic's environment ships inside the package (``persistence/migrations``); these functions
drive it on an async connection of a :class:`~gatekeeper.persistence.db.Database`, so no
``alembic.ini`` is needed. ``gatekeeper migrate`` (``gatekeeper.cli``) calls :func:`run`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from gatekeeper.errors import GatekeeperError, PersistenceError
from gatekeeper.persistence.db import Database

__all__ = [
    "check_migrated",
    "current_revision",
    "downgrade",
    "head_revision",
    "run",
    "schema_problem",
    "upgrade",
]

_SCRIPTS = Path(__file__).with_name("migrations")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def head_revision() -> str:
    """The newest revision this version of Gatekeeper ships."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


async def _run(db: Database, fn: Callable[[Connection], Any]) -> Any:
    try:
        async with db.engine.begin() as conn:
            return await conn.run_sync(fn)
    except CommandError as exc:
        raise PersistenceError(f"migration failed: {exc}") from exc
    except (SQLAlchemyError, OSError) as exc:
        raise PersistenceError(f"database {db.safe_url} failed during migration: {exc}") from exc


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (default: the newest)."""

    def step(conn: Connection) -> None:
        config = _config()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)

    await _run(db, step)


async def downgrade(db: Database, revision: str = "base") -> None:
    """Take the schema back to ``revision`` (``base``: an empty database)."""

    def step(conn: Connection) -> None:
        config = _config()
        config.attributes["connection"] = conn
        command.downgrade(config, revision)

    await _run(db, step)


async def current_revision(db: Database) -> str | None:
    """The revision the database is at, ``None`` if it was never migrated."""

    def read(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    result: str | None = await _run(db, read)
    return result


async def check_migrated(db: Database) -> None:
    """Raise :class:`PersistenceError` with instructions unless the schema is at head.

    ``gatekeeper serve`` calls this before accepting traffic: running on a half-built schema
    would fail later, request by request, with obscure SQL errors.
    """
    current = await current_revision(db)
    head = head_revision()
    if current != head:
        state = "has never been migrated" if current is None else f"is at revision {current}"
        raise PersistenceError(
            f"database {db.safe_url} {state}, but this Gatekeeper needs revision {head}: "
            f"run `gatekeeper migrate` (with the same GATEKEEPER_DATABASE_URL) first"
        )


def run(args: argparse.Namespace) -> int:
    """Execute parsed ``migrate`` arguments; prints what happened."""
    from gatekeeper.settings import Settings

    url = args.url or Settings().database_url

    async def go() -> str:
        db = Database(url)
        try:
            if args.check:
                await check_migrated(db)
            elif args.downgrade:
                await downgrade(db, args.revision)
            else:
                await upgrade(db, args.revision)
            return f"database {db.safe_url} is at revision {await current_revision(db)}"
        finally:
            await db.aclose()

    try:
        print(asyncio.run(go()))
    except GatekeeperError as exc:
        print(f"gatekeeper migrate: {exc}")
        return 1
    return 0


def schema_problem(database_url: str) -> str | None:
    """Why ``gatekeeper serve`` must not start on this database, or ``None`` if it may.

    A SQLite file that does not exist yet is created at head: the embedded default needs no
    set-up and a brand-new file cannot hold a half-built schema. Every other database (an
    existing file, any PostgreSQL) must already be at head. Synchronous, for the command line
    before the server's event loop starts.
    """
    try:
        url = make_url(database_url)
    except ArgumentError:
        return f"database URL {database_url!r} is malformed"
    fresh = url.drivername.startswith("sqlite") and (
        not url.database or url.database == ":memory:" or not Path(url.database).exists()
    )

    async def go() -> str | None:
        db = Database(database_url)
        try:
            if fresh:
                await upgrade(db)
            await check_migrated(db)
        except GatekeeperError as exc:
            return str(exc)
        finally:
            await db.aclose()
        return None

    return asyncio.run(go())
