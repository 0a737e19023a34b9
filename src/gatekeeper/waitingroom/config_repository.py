"""Where tenants live: their settings, names and secret keys; cached per replica for reading.

Two repositories keep the same behaviour: :class:`SqlConfigRepository` (the ``tenants`` and
``tenant_keys`` tables, ``sql_repository.py``) and :class:`MemoryConfigRepository` (the
embedded mode without a database, and tests). Every replica reads configs through
:class:`CachedConfigs`, whose entries live ``ttl`` seconds: a change made on one replica
(``POST /config``) or by the admin API takes effect everywhere within that time, with no restart
and no SQL query on the hot path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from gatekeeper.errors import Conflict, NotFound
from gatekeeper.types import Clock, SystemClock
from gatekeeper.waitingroom.config import TenantConfig
from gatekeeper.waitingroom.readthrough import ReadThrough
from gatekeeper.waitingroom.sql_repository import SqlConfigRepository
from gatekeeper.waitingroom.tenants import (
    TenantKey,
    TenantRecord,
    key_for,
    parse_business_ids,
    utcnow,
)

__all__ = [
    "BusinessIds",
    "CachedConfigs",
    "ConfigRepository",
    "MemoryConfigRepository",
    "SqlConfigRepository",
]

BusinessIds = Iterable[str] | Mapping[str, Sequence[str]]
"""Tenants to ensure: ``GATEKEEPER_BUSINESS_IDS`` entries, or ``{public id: [secret keys]}``."""


class ConfigRepository(Protocol):
    """Tenants by public id (``business_id``); ``get`` is ``None`` for unknown or disabled."""

    async def get(self, tenant: str) -> TenantConfig | None: ...

    async def save(self, tenant: str, config: TenantConfig) -> TenantConfig:
        """Persist ``config`` for an existing tenant."""
        ...

    async def ensure(self, tenants: BusinessIds) -> None:
        """Create the listed tenants with default settings unless they exist, and make each
        one's ``env`` keys exactly the listed secrets (others of that origin expire now)."""
        ...

    async def tenants(self) -> list[str]:
        """Every enabled tenant (the admission worker's work list)."""
        ...

    async def record(self, tenant: str) -> TenantRecord | None:
        """Everything about one tenant (enabled or not), with its keys."""
        ...

    async def records(self) -> list[TenantRecord]: ...

    async def create(self, record: TenantRecord) -> TenantRecord:
        """Add a tenant with ``record.keys`` in one transaction (:class:`Conflict` if its id
        is taken)."""
        ...

    async def update(
        self,
        tenant: str,
        *,
        name: str | None = None,
        enabled: bool | None = None,
        config: TenantConfig | None = None,
    ) -> TenantRecord:
        """Change what is given (:class:`NotFound` for an unknown tenant)."""
        ...

    async def delete(self, tenant: str) -> None:
        """Remove a tenant and its keys (:class:`NotFound` for an unknown one)."""
        ...

    async def find_key(self, prefix: str) -> TenantKey | None:
        """The key with this public prefix, valid or not."""
        ...

    async def add_key(self, key: TenantKey) -> None:
        """Store a key (:class:`Conflict` if its prefix is taken, :class:`NotFound` without
        its tenant)."""
        ...

    async def rotate_key(self, key: TenantKey, until: datetime) -> None:
        """Store ``key`` and make every other key of its tenant end at ``until`` at the latest,
        in one transaction (:class:`NotFound` without the tenant)."""
        ...

    async def expire_keys(
        self,
        tenant: str,
        until: datetime,
        *,
        replaced_by: str | None = None,
        origin: str | None = None,
        keep: Sequence[str] = (),
    ) -> None:
        """Make ``tenant``'s keys (of ``origin``, but the ids in ``keep``) end at ``until`` at
        the latest."""
        ...


class MemoryConfigRepository:
    """Tenants in a dict: the embedded mode without a database, and unit tests."""

    def __init__(self, tenants: BusinessIds = (), *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._records: dict[str, TenantRecord] = {}
        self._keys: dict[str, TenantKey] = {}
        self._seed(parse_business_ids(tenants))

    def _seed(self, wanted: dict[str, list[str]]) -> None:
        now = utcnow(self.clock.now())
        for tenant, secrets in wanted.items():
            if tenant not in self._records:
                self._records[tenant] = TenantRecord(tenant, tenant, created_at=now, updated_at=now)
            kept = []
            for secret in secrets:
                key = key_for(tenant, secret, now, origin="env")
                existing = self._keys.get(key.prefix)
                if existing is None or existing.key_hash != key.key_hash:
                    if existing is not None and existing.tenant != tenant:
                        raise Conflict(f"a key with prefix {key.prefix} belongs to another tenant")
                    self._keys[key.prefix] = key
                    existing = key
                kept.append(existing.id)
            self._expire(tenant, now, None, "env", kept)

    async def get(self, tenant: str) -> TenantConfig | None:
        record = self._records.get(tenant)
        return record.config if record is not None and record.enabled else None

    async def save(self, tenant: str, config: TenantConfig) -> TenantConfig:
        await self.update(tenant, config=config)
        return config

    async def ensure(self, tenants: BusinessIds) -> None:
        self._seed(parse_business_ids(tenants))

    async def tenants(self) -> list[str]:
        return sorted(t for t, r in self._records.items() if r.enabled)

    async def record(self, tenant: str) -> TenantRecord | None:
        record = self._records.get(tenant)
        if record is None:
            return None
        return replace(record, keys=tuple(k for k in self._keys.values() if k.tenant == tenant))

    async def records(self) -> list[TenantRecord]:
        return [r for t in sorted(self._records) if (r := await self.record(t)) is not None]

    async def create(self, record: TenantRecord) -> TenantRecord:
        if record.business_id in self._records:
            raise Conflict(f"tenant {record.business_id!r} already exists")
        now = utcnow(self.clock.now())
        if any(key.prefix in self._keys for key in record.keys):
            raise Conflict("a key with this prefix exists")
        self._records[record.business_id] = replace(record, created_at=now, updated_at=now, keys=())
        for key in record.keys:
            self._keys[key.prefix] = key
        return replace(record, created_at=now, updated_at=now)

    async def update(
        self,
        tenant: str,
        *,
        name: str | None = None,
        enabled: bool | None = None,
        config: TenantConfig | None = None,
    ) -> TenantRecord:
        record = self._records.get(tenant)
        if record is None:
            raise NotFound(f"tenant {tenant!r} does not exist")
        self._records[tenant] = replace(
            record,
            name=record.name if name is None else name,
            enabled=record.enabled if enabled is None else enabled,
            config=record.config if config is None else config,
            updated_at=utcnow(self.clock.now()),
        )
        updated = await self.record(tenant)
        assert updated is not None
        return updated

    async def delete(self, tenant: str) -> None:
        if self._records.pop(tenant, None) is None:
            raise NotFound(f"tenant {tenant!r} does not exist")
        self._keys = {p: k for p, k in self._keys.items() if k.tenant != tenant}

    async def find_key(self, prefix: str) -> TenantKey | None:
        return self._keys.get(prefix)

    async def add_key(self, key: TenantKey) -> None:
        if key.tenant not in self._records:
            raise NotFound(f"tenant {key.tenant!r} does not exist")
        if key.prefix in self._keys:
            raise Conflict("a key with this prefix exists")
        self._keys[key.prefix] = key

    async def rotate_key(self, key: TenantKey, until: datetime) -> None:
        await self.add_key(key)
        self._expire(key.tenant, until, key.id, None, [key.id])

    async def expire_keys(
        self,
        tenant: str,
        until: datetime,
        *,
        replaced_by: str | None = None,
        origin: str | None = None,
        keep: Sequence[str] = (),
    ) -> None:
        self._expire(tenant, until, replaced_by, origin, keep)

    def _expire(
        self,
        tenant: str,
        until: datetime,
        replaced_by: str | None,
        origin: str | None,
        keep: Sequence[str],
    ) -> None:
        for prefix, key in list(self._keys.items()):
            if key.tenant != tenant or key.id in keep or (origin and key.origin != origin):
                continue
            if key.expires_at is None or key.expires_at > until:
                self._keys[prefix] = replace(
                    key, expires_at=until, replaced_by=replaced_by or key.replaced_by
                )


class CachedConfigs:
    """A read-through cache of tenant configs over a :class:`ConfigRepository`."""

    def __init__(self, repository: ConfigRepository, clock: Clock, ttl: float = 2.0) -> None:
        self.repository = repository
        self.clock = clock
        self.ttl = ttl
        self._configs: ReadThrough[str, TenantConfig] = ReadThrough(self._load, clock, ttl)
        self._tenants: tuple[float, list[str]] | None = None

    def _load(self, tenant: str) -> Awaitable[TenantConfig | None]:
        # Late-bound: the component may swap the repository (database down at start).
        return self.repository.get(tenant)

    def fresh(self, tenant: str) -> TenantConfig | None:
        """The cached config of a known tenant if still fresh, else None (then ``get``)."""
        return self._configs.fresh(tenant)

    async def get(self, tenant: str) -> TenantConfig | None:
        return await self._configs.get(tenant)

    async def save(self, tenant: str, config: TenantConfig) -> TenantConfig:
        saved = await self.repository.save(tenant, config)
        self._configs.put(tenant, saved)
        return saved

    def forget(self, tenant: str) -> None:
        """Drop the cached entry (after an admin change here: seen here at once)."""
        self._configs.forget(tenant)
        self._tenants = None

    async def tenants(self) -> list[str]:
        """Every enabled tenant, re-read from the repository at most every ``ttl`` seconds."""
        now = self.clock.monotonic()
        if self._tenants is None or self._tenants[0] <= now:
            self._tenants = (now + self.ttl, await self.repository.tenants())
        return self._tenants[1]
