"""Where tenants' waiting-room configs live: SQL (the ``tenants`` table), cached per replica.

Every replica reads through :class:`CachedConfigs`, whose entries live ``ttl`` seconds: a change
made on one replica (``POST /config``) or by the admin API takes effect everywhere within that
time, with no restart and no SQL query on the hot path. Unknown tenants are cached too, so a
flood of bad ``business_id`` values cannot hammer the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select

from gatekeeper.persistence.models import Tenant
from gatekeeper.types import Clock
from gatekeeper.waitingroom.config import CONFIG_KEYS, TenantConfig

if TYPE_CHECKING:
    from gatekeeper.persistence.db import Database

__all__ = [
    "CachedConfigs",
    "ConfigRepository",
    "MemoryConfigRepository",
    "SqlConfigRepository",
]


class ConfigRepository(Protocol):
    """Tenant configs by ``business_id``; ``None`` for unknown or disabled tenants."""

    async def get(self, tenant: str) -> TenantConfig | None: ...

    async def save(self, tenant: str, config: TenantConfig) -> TenantConfig:
        """Persist ``config`` for an existing tenant."""
        ...

    async def ensure(self, tenants: Iterable[str]) -> None:
        """Create the listed tenants with default settings unless they exist."""
        ...

    async def tenants(self) -> list[str]:
        """Every enabled tenant (the admission worker's work list)."""
        ...


class MemoryConfigRepository:
    """Configs in a dict: unit tests and the embedded mode without a database."""

    def __init__(self, tenants: Iterable[str] = ()) -> None:
        self._configs: dict[str, TenantConfig] = {t: TenantConfig() for t in tenants}

    async def get(self, tenant: str) -> TenantConfig | None:
        return self._configs.get(tenant)

    async def save(self, tenant: str, config: TenantConfig) -> TenantConfig:
        self._configs[tenant] = config
        return config

    async def ensure(self, tenants: Iterable[str]) -> None:
        for tenant in tenants:
            self._configs.setdefault(tenant, TenantConfig())

    async def tenants(self) -> list[str]:
        return sorted(self._configs)


class SqlConfigRepository:
    """Configs in the ``tenants`` table (SQLite or PostgreSQL) of ``gatekeeper.persistence``."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def get(self, tenant: str) -> TenantConfig | None:
        async with self.database.transaction() as session:
            row = await session.get(Tenant, tenant)
            if row is None or not row.enabled:
                return None
            return TenantConfig.model_validate({k: getattr(row, k) for k in CONFIG_KEYS})

    async def save(self, tenant: str, config: TenantConfig) -> TenantConfig:
        async with self.database.transaction() as session:
            row = await session.get(Tenant, tenant)
            if row is None:
                row = Tenant(business_id=tenant, name=tenant, enabled=True)
                session.add(row)
            for key, value in config.model_dump().items():
                setattr(row, key, value)
        return config

    async def ensure(self, tenants: Iterable[str]) -> None:
        wanted = set(tenants)
        if not wanted:
            return
        async with self.database.transaction() as session:
            present = set(
                (
                    await session.scalars(
                        select(Tenant.business_id).where(Tenant.business_id.in_(wanted))
                    )
                ).all()
            )
            defaults = TenantConfig().model_dump()
            for tenant in sorted(wanted - present):
                session.add(Tenant(business_id=tenant, name=tenant, enabled=True, **defaults))

    async def tenants(self) -> list[str]:
        async with self.database.transaction() as session:
            rows = await session.scalars(select(Tenant.business_id).where(Tenant.enabled.is_(True)))
            return sorted(rows.all())


class CachedConfigs:
    """A read-through cache over a :class:`ConfigRepository`, ``ttl`` seconds per entry."""

    def __init__(self, repository: ConfigRepository, clock: Clock, ttl: float = 2.0) -> None:
        self.repository = repository
        self.clock = clock
        self.ttl = ttl
        self._entries: dict[str, tuple[float, TenantConfig | None]] = {}
        self._tenants: tuple[float, list[str]] | None = None
        self._loading: dict[str, asyncio.Future[TenantConfig | None]] = {}

    def fresh(self, tenant: str) -> TenantConfig | None:
        """The cached config of a known tenant if still fresh, else None (then ``get``)."""
        entry = self._entries.get(tenant)
        if entry is not None and entry[0] > self.clock.monotonic():
            return entry[1]
        return None

    async def get(self, tenant: str) -> TenantConfig | None:
        entry = self._entries.get(tenant)
        if entry is not None and entry[0] > self.clock.monotonic():
            return entry[1]
        # One read per tenant at a time: when an entry expires under load, every request
        # of that moment would otherwise run its own SQL query (a stampede on each expiry).
        loading = self._loading.get(tenant)
        if loading is None:
            loading = asyncio.ensure_future(self._load(tenant))
            self._loading[tenant] = loading
            loading.add_done_callback(lambda done: self._loaded(tenant, done))
        # Shielded: a cancelled caller does not cancel the read the others wait for.
        return await asyncio.shield(loading)

    async def _load(self, tenant: str) -> TenantConfig | None:
        config = await self.repository.get(tenant)
        if len(self._entries) > 10_000:
            # Bounded: random business ids must not grow the cache without limit.
            self._entries.clear()
        self._entries[tenant] = (self.clock.monotonic() + self.ttl, config)
        return config

    def _loaded(self, tenant: str, done: asyncio.Future[TenantConfig | None]) -> None:
        if self._loading.get(tenant) is done:
            del self._loading[tenant]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter got it already

    async def save(self, tenant: str, config: TenantConfig) -> TenantConfig:
        saved = await self.repository.save(tenant, config)
        self._entries[tenant] = (self.clock.monotonic() + self.ttl, saved)
        return saved

    async def tenants(self) -> list[str]:
        """Every enabled tenant, re-read from the repository at most every ``ttl`` seconds."""
        now = self.clock.monotonic()
        if self._tenants is None or self._tenants[0] <= now:
            self._tenants = (now + self.ttl, await self.repository.tenants())
        return self._tenants[1]
