"""What the operator may do to the waiting room's tenants, independent of HTTP.

:class:`TenantAdmin` creates, reads, changes, deletes tenants and rotates their secret keys;
each change is recorded through ``audit`` (``identity.audit.AuditLog.record``, when the identity
component runs). The routes of ``admin.py`` only authorize the caller and call it, so that
they can move to another table of routes unchanged. Settings are validated by
:class:`TenantConfig` (the same rule as ``POST /config``); errors name each bad field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatekeeper.errors import InvalidInput, NotFound
from gatekeeper.waitingroom.config import CONFIG_KEYS, TenantConfig
from gatekeeper.waitingroom.tenants import (
    MAX_OVERLAP,
    TenantKey,
    TenantRecord,
    check_tenant_id,
    key_for,
    new_secret,
    utcnow,
)

if TYPE_CHECKING:
    from gatekeeper.waitingroom.service import WaitingRoomService

__all__ = ["Audit", "RotateBody", "TenantAdmin"]

Audit = Callable[..., Awaitable[None]]
"""``audit(actor, action, target, ip, **detail)``."""


class _Meta(BaseModel):
    """What a tenant has besides its settings (strict: ``"true"`` is not a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    business_id: str | None = None
    name: str | None = Field(default=None, max_length=200)
    enabled: bool | None = None


class RotateBody(BaseModel):
    """``POST /admin/tenants/{id}/rotate_secret``'s body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    overlap_seconds: int = Field(default=3600, ge=0, le=MAX_OVERLAP)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


def _split(data: object) -> tuple[_Meta, dict[str, Any]]:
    """A JSON object split into the tenant's own fields and its settings."""
    if not isinstance(data, dict):
        raise InvalidInput("body must be a JSON object")
    fields = dict(data)
    settings = {k: fields.pop(k) for k in list(fields) if k in CONFIG_KEYS}
    try:
        meta = _Meta.model_validate(fields)
    except ValidationError as exc:
        raise InvalidInput(_problems(exc)) from None
    return meta, settings


def _config(base: TenantConfig, changes: dict[str, Any]) -> TenantConfig:
    try:
        return base.updated(changes)
    except ValidationError as exc:
        raise InvalidInput(_problems(exc)) from None


async def _no_audit(*_: Any, **__: Any) -> None:
    return None


class TenantAdmin:
    """The admin operations on ``service``'s tenants; answers are JSON-ready dicts."""

    def __init__(self, service: WaitingRoomService, audit: Audit | None = None) -> None:
        self.configs = service.configs
        self.access = service.access
        self.clock = service.clock
        self.audit = audit or _no_audit

    def _shown(self, record: TenantRecord) -> dict[str, Any]:
        return record.as_dict(self.clock.now())

    def _issue(self, tenant: str) -> tuple[str, TenantKey]:
        secret = new_secret()
        return secret, key_for(tenant, secret, utcnow(self.clock.now()))

    async def _record(self, tenant: str) -> TenantRecord:
        record = await self.configs.repository.record(tenant)
        if record is None:
            raise NotFound(f"tenant {tenant!r} does not exist")
        return record

    async def list(self) -> dict[str, Any]:
        """Every tenant, its settings and its live keys (prefixes only)."""
        return {"tenants": [self._shown(r) for r in await self.configs.repository.records()]}

    async def get(self, tenant: str) -> dict[str, Any]:
        return self._shown(await self._record(tenant))

    async def create(self, actor: str, ip: str, data: object) -> dict[str, Any]:
        """A new tenant (unset settings take the defaults) with its first secret key, which
        this answer alone shows; tenant and key are stored in one transaction."""
        meta, settings = _split(data)
        tenant = check_tenant_id(meta.business_id)
        secret, key = self._issue(tenant)
        record = TenantRecord(
            tenant,
            meta.name if meta.name is not None else tenant,
            True if meta.enabled is None else meta.enabled,
            _config(TenantConfig(), settings),
            keys=(key,),
        )
        created = await self.configs.repository.create(record)
        self.configs.forget(tenant)
        await self.audit(
            actor, "tenant.create", tenant, ip, **meta.model_dump(exclude_none=True), **settings
        )
        return {**self._shown(created), "secret_key": secret}

    async def update(self, actor: str, ip: str, tenant: str, data: object) -> dict[str, Any]:
        """Change some settings, the name or the switch (others keep their value)."""
        meta, settings = _split(data)
        if meta.business_id not in (None, tenant):
            raise InvalidInput("business_id cannot be changed")
        record = await self._record(tenant)
        updated = await self.configs.repository.update(
            tenant,
            name=meta.name,
            enabled=meta.enabled,
            config=_config(record.config, settings) if settings else None,
        )
        self.configs.forget(tenant)
        changes = {**meta.model_dump(exclude_none=True, exclude={"business_id"}), **settings}
        await self.audit(actor, "tenant.update", tenant, ip, **changes)
        return self._shown(updated)

    async def delete(self, actor: str, ip: str, tenant: str) -> dict[str, Any]:
        """Remove a tenant and its keys (its queue in Redis expires on its own)."""
        await self.configs.repository.delete(tenant)
        self.configs.forget(tenant)
        await self.audit(actor, "tenant.delete", tenant, ip)
        return {"message": f"tenant {tenant} deleted"}

    async def rotate(self, actor: str, ip: str, tenant: str, overlap: int) -> dict[str, Any]:
        """A new secret key, shown once; every other key of the tenant ends ``overlap``
        seconds from now at the latest (0: now; on other replicas within the cache's life)."""
        if not 0 <= overlap <= MAX_OVERLAP:
            raise InvalidInput(f"overlap_seconds must be between 0 and {MAX_OVERLAP}")
        secret, key = self._issue(tenant)
        until = utcnow(self.clock.now()) + timedelta(seconds=overlap)
        await self.configs.repository.rotate_key(key, until)
        for old in (await self._record(tenant)).keys:
            self.access.forget(old.prefix)
        await self.audit(
            actor, "tenant.rotate_secret", tenant, ip, overlap_seconds=overlap, prefix=key.prefix
        )
        return {
            "business_id": tenant,
            "secret_key": secret,
            "key": key.as_dict(),
            "previous_keys_valid_until": until.isoformat(),
        }
