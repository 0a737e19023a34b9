"""The SQL database: one async engine and its session factory per process.

``GATEKEEPER_DATABASE_URL`` chooses the engine: ``sqlite+aiosqlite:///path.db`` (the embedded
default, no set-up) or ``postgresql+asyncpg://user@host/db`` (production). SQLAlchemy's own
exceptions stop here: :meth:`Database.transaction` translates them into
:class:`~gatekeeper.errors.PersistenceError` (and unique-constraint violations into
:class:`~gatekeeper.errors.Conflict`), so repositories and routes never see them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from gatekeeper.errors import ConfigurationError, Conflict, PersistenceError

if TYPE_CHECKING:
    from gatekeeper.settings import Settings

__all__ = ["Database"]

_SUPPORTED = ("sqlite+aiosqlite", "postgresql+asyncpg")


class Database:
    """An async SQLAlchemy engine plus a session factory.

    ``schema`` (PostgreSQL only) puts every table in that schema through the connection's
    ``search_path``: tests isolate themselves this way, and so can several deployments sharing
    one database. Open it once at the edge and pass it inward; close it with :meth:`aclose`.
    """

    def __init__(self, url: str, *, schema: str | None = None, echo: bool = False) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigurationError(f"database URL {url!r} is malformed") from exc
        if parsed.drivername not in _SUPPORTED:
            raise ConfigurationError(
                f"database URL scheme {parsed.drivername!r} is not supported "
                f"(use {' or '.join(s + '://' for s in _SUPPORTED)})"
            )
        self.url = url
        self.schema = schema
        options: dict[str, Any] = {"echo": echo}
        if parsed.drivername.startswith("sqlite"):
            # SQLite serialises writers; wait for the lock instead of failing at once.
            options["connect_args"] = {"timeout": 30}
        else:
            options["pool_pre_ping"] = True
            if schema is not None:
                if not schema.replace("_", "").isalnum():
                    raise ConfigurationError(f"database schema {schema!r} must be alphanumeric")
                options["connect_args"] = {"server_settings": {"search_path": schema}}
        self.engine: AsyncEngine = create_async_engine(url, **options)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """The database named by ``GATEKEEPER_DATABASE_URL``."""
        return cls(settings.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error.

        Database errors leave as :class:`PersistenceError`; a violated unique constraint as
        :class:`Conflict`. Gatekeeper's own errors raised inside pass through unchanged.
        """
        try:
            async with self.sessions() as session, session.begin():
                yield session
        except IntegrityError as exc:
            raise Conflict(f"the change conflicts with existing data: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise PersistenceError(f"database {self.safe_url} failed: {exc}") from exc
        except OSError as exc:
            raise PersistenceError(f"database {self.safe_url} is unreachable: {exc}") from exc

    async def ping(self) -> None:
        """Raise :class:`PersistenceError` unless the database answers."""
        async with self.transaction() as session:
            await session.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    async def dispose(self) -> None:
        """Alias of :meth:`aclose` (SQLAlchemy's word for it)."""
        await self.aclose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Foreign keys are off by default in SQLite; WAL lets readers proceed during a write, which
    # matters when two local replicas share one file.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()
