"""Tenants in SQL (SQLite or PostgreSQL): the ``tenants`` and ``tenant_keys`` tables.

The :class:`~gatekeeper.waitingroom.config_repository.ConfigRepository` of ``serve``: every
replica reads and writes the same rows; each replica caches what it reads for a few seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Update, delete, or_, select, update

from gatekeeper.errors import Conflict, NotFound
from gatekeeper.persistence.models import Tenant
from gatekeeper.persistence.models import TenantKey as KeyRow
from gatekeeper.types import Clock, SystemClock
from gatekeeper.waitingroom.config import CONFIG_KEYS, TenantConfig
from gatekeeper.waitingroom.tenants import (
    TenantKey,
    TenantRecord,
    key_for,
    parse_business_ids,
    utcnow,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from gatekeeper.persistence.db import Database

__all__ = ["SqlConfigRepository"]


def _config(row: Tenant) -> TenantConfig:
    return TenantConfig.model_validate({k: getattr(row, k) for k in CONFIG_KEYS})


def _key(row: KeyRow) -> TenantKey:
    return TenantKey(
        row.id,
        row.business_id,
        row.prefix,
        row.key_hash,
        row.created_at,
        row.expires_at,
        row.origin,
        row.replaced_by,
    )


def _record(row: Tenant, keys: Sequence[KeyRow]) -> TenantRecord:
    return TenantRecord(
        row.business_id,
        row.name,
        row.enabled,
        _config(row),
        row.created_at,
        row.updated_at,
        tuple(_key(k) for k in keys),
    )


class SqlConfigRepository:
    """Tenants, their settings and keys in SQL (``gatekeeper.persistence``)."""

    def __init__(self, database: Database, *, clock: Clock | None = None) -> None:
        self.database = database
        self.clock: Clock = clock or SystemClock()

    async def get(self, tenant: str) -> TenantConfig | None:
        async with self.database.transaction() as session:
            row = await session.get(Tenant, tenant)
            if row is None or not row.enabled:
                return None
            return _config(row)

    async def save(self, tenant: str, config: TenantConfig) -> TenantConfig:
        await self.update(tenant, config=config)
        return config

    async def ensure(self, tenants: Iterable[str] | Mapping[str, Sequence[str]]) -> None:
        wanted = parse_business_ids(tenants)
        if not wanted:
            return
        now = utcnow(self.clock.now())
        async with self.database.transaction() as session:
            present = set(
                (
                    await session.scalars(
                        select(Tenant.business_id).where(Tenant.business_id.in_(wanted))
                    )
                ).all()
            )
            defaults = TenantConfig().model_dump()
            for tenant in sorted(set(wanted) - present):
                session.add(
                    Tenant(
                        business_id=tenant,
                        name=tenant,
                        enabled=True,
                        created_at=now,
                        updated_at=now,
                        **defaults,
                    )
                )
        for tenant, secrets in wanted.items():
            await self._env_keys(tenant, secrets, now)

    async def _env_keys(self, tenant: str, secrets: Sequence[str], now: datetime) -> None:
        """Make ``tenant``'s ``env`` keys exactly ``secrets`` (idempotent across replicas)."""
        kept: list[str] = []
        for secret in secrets:
            key = key_for(tenant, secret, now, origin="env")
            existing = await self.find_key(key.prefix)
            if existing is None:
                try:
                    await self.add_key(key)
                except Conflict:  # another replica, starting at the same moment, added it
                    existing = await self.find_key(key.prefix)
                else:
                    existing = key
            if existing is None or existing.tenant != tenant or existing.key_hash != key.key_hash:
                raise Conflict(f"a different key with prefix {key.prefix} exists already")
            kept.append(existing.id)
        await self.expire_keys(tenant, now, origin="env", keep=kept)

    async def tenants(self) -> list[str]:
        async with self.database.transaction() as session:
            rows = await session.scalars(select(Tenant.business_id).where(Tenant.enabled.is_(True)))
            return sorted(rows.all())

    async def record(self, tenant: str) -> TenantRecord | None:
        async with self.database.transaction() as session:
            row = await session.get(Tenant, tenant)
            if row is None:
                return None
            keys = (
                await session.scalars(
                    select(KeyRow).where(KeyRow.business_id == tenant).order_by(KeyRow.created_at)
                )
            ).all()
            return _record(row, keys)

    async def records(self) -> list[TenantRecord]:
        async with self.database.transaction() as session:
            rows = (await session.scalars(select(Tenant).order_by(Tenant.business_id))).all()
            keys = (await session.scalars(select(KeyRow).order_by(KeyRow.created_at))).all()
        by_tenant: dict[str, list[KeyRow]] = {}
        for key in keys:
            by_tenant.setdefault(key.business_id, []).append(key)
        return [_record(row, by_tenant.get(row.business_id, [])) for row in rows]

    async def create(self, record: TenantRecord) -> TenantRecord:
        now = utcnow(self.clock.now())
        async with self.database.transaction() as session:
            if await session.get(Tenant, record.business_id) is not None:
                raise Conflict(f"tenant {record.business_id!r} already exists")
            row = Tenant(
                business_id=record.business_id,
                name=record.name,
                enabled=record.enabled,
                created_at=now,
                updated_at=now,
                **record.config.model_dump(),
            )
            session.add(row)
            keys = [_row(key) for key in record.keys]
            session.add_all(keys)
            await session.flush()
            return _record(row, keys)

    async def update(
        self,
        tenant: str,
        *,
        name: str | None = None,
        enabled: bool | None = None,
        config: TenantConfig | None = None,
    ) -> TenantRecord:
        async with self.database.transaction() as session:
            row = await session.get(Tenant, tenant)
            if row is None:
                raise NotFound(f"tenant {tenant!r} does not exist")
            if name is not None:
                row.name = name
            if enabled is not None:
                row.enabled = enabled
            if config is not None:
                for key, value in config.model_dump().items():
                    setattr(row, key, value)
            row.updated_at = utcnow(self.clock.now())
        record = await self.record(tenant)
        assert record is not None
        return record

    async def delete(self, tenant: str) -> None:
        async with self.database.transaction() as session:
            row = await session.get(Tenant, tenant)
            if row is None:
                raise NotFound(f"tenant {tenant!r} does not exist")
            # Keys first, explicitly: not every connection enforces ON DELETE CASCADE (SQLite
            # only with its foreign_keys pragma).
            await session.execute(delete(KeyRow).where(KeyRow.business_id == tenant))
            await session.delete(row)

    async def find_key(self, prefix: str) -> TenantKey | None:
        async with self.database.transaction() as session:
            row = await session.scalar(select(KeyRow).where(KeyRow.prefix == prefix))
            return None if row is None else _key(row)

    async def add_key(self, key: TenantKey) -> None:
        async with self.database.transaction() as session:
            if await session.get(Tenant, key.tenant) is None:
                raise NotFound(f"tenant {key.tenant!r} does not exist")
            session.add(_row(key))

    async def rotate_key(self, key: TenantKey, until: datetime) -> None:
        async with self.database.transaction() as session:
            if await session.get(Tenant, key.tenant) is None:
                raise NotFound(f"tenant {key.tenant!r} does not exist")
            session.add(_row(key))
            await session.execute(
                _expiry(key.tenant, until, replaced_by=key.id, origin=None, keep=[key.id])
            )

    async def expire_keys(
        self,
        tenant: str,
        until: datetime,
        *,
        replaced_by: str | None = None,
        origin: str | None = None,
        keep: Sequence[str] = (),
    ) -> None:
        async with self.database.transaction() as session:
            await session.execute(
                _expiry(tenant, until, replaced_by=replaced_by, origin=origin, keep=keep)
            )


def _row(key: TenantKey) -> KeyRow:
    return KeyRow(
        id=key.id,
        business_id=key.tenant,
        prefix=key.prefix,
        key_hash=key.key_hash,
        origin=key.origin,
        created_at=key.created_at,
        expires_at=key.expires_at,
        replaced_by=key.replaced_by,
    )


def _expiry(
    tenant: str,
    until: datetime,
    *,
    replaced_by: str | None,
    origin: str | None,
    keep: Sequence[str],
) -> Update:
    """The UPDATE making ``tenant``'s keys (of ``origin``, but ``keep``) end by ``until``."""
    query = (
        update(KeyRow)
        .where(KeyRow.business_id == tenant)
        .where(or_(KeyRow.expires_at.is_(None), KeyRow.expires_at > until))
    )
    if origin is not None:
        query = query.where(KeyRow.origin == origin)
    if keep:
        query = query.where(KeyRow.id.not_in(keep))
    values: dict[str, object] = {"expires_at": until}
    if replaced_by is not None:
        values["replaced_by"] = replaced_by
    return query.values(**values)
