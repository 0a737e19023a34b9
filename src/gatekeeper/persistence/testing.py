"""Throw-away databases for tests: a temporary SQLite file or a private PostgreSQL schema.

``scratch_database`` never touches anything it did not create: on PostgreSQL it makes a schema
with a random name, points the connections' ``search_path`` at it, and drops only that schema
afterwards, so test runs can share one server.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from gatekeeper.persistence.db import Database
from gatekeeper.persistence.migrate import upgrade

__all__ = ["scratch_database"]


@asynccontextmanager
async def scratch_database(url: str, *, migrate: bool = True) -> AsyncIterator[Database]:
    """A fresh, empty (or migrated to head) database on the server or engine of ``url``.

    For ``sqlite+aiosqlite://`` URLs the path is ignored and a new temporary file is used.
    """
    if make_url(url).drivername.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="gk-db-") as directory:
            db = Database(f"sqlite+aiosqlite:///{Path(directory) / 'test.db'}")
            try:
                if migrate:
                    await upgrade(db)
                yield db
            finally:
                await db.aclose()
        return

    schema = f"gk_test_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        db = Database(url, schema=schema)
        try:
            if migrate:
                await upgrade(db)
            yield db
        finally:
            await db.aclose()
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        await admin.dispose()
