"""``/admin/tenants*``: the operator's levers over the waiting room's tenants, every one audited.

=============================================  ===============================================
``GET /admin/tenants``                         every tenant with its settings and live keys
``POST /admin/tenants``                        a new tenant; the answer shows its secret key,
                                               once
``GET|PATCH|DELETE /admin/tenants/{id}``       one tenant: read, change, remove
``POST /admin/tenants/{id}/rotate_secret``     a new secret key (shown once); the others stay
                                               valid ``overlap_seconds`` more (default 3600)
=============================================  ===============================================

Callers present the admin token (``Authorization: Bearer <GATEKEEPER_ADMIN_TOKEN>``) or, when
the identity component runs, the credentials of a user with the admin role; each change is
written to its audit log. Settings are validated by :class:`TenantConfig` (the same rule as
``POST /config``): 422 names each bad field.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatekeeper.errors import AuthenticationError, InvalidInput, NotFound
from gatekeeper.identity.http import ErrorRoute, client_address, presented_credentials
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

__all__ = ["tenant_admin_router"]

_ID = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class _Meta(BaseModel):
    """What a tenant has besides its settings (strict: ``"true"`` is not a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    business_id: str | None = None
    name: str | None = Field(default=None, max_length=200)
    enabled: bool | None = None


class RotateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    overlap_seconds: int = Field(default=3600, ge=0, le=MAX_OVERLAP)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


async def _body(request: Request) -> tuple[_Meta, dict[str, Any]]:
    """The JSON object sent, split into the tenant's own fields and its settings."""
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        raise InvalidInput("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidInput("body must be a JSON object")
    settings = {k: data.pop(k) for k in list(data) if k in CONFIG_KEYS}
    try:
        meta = _Meta.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_problems(exc)) from None
    return meta, settings


def _config(base: TenantConfig, changes: dict[str, Any]) -> TenantConfig:
    try:
        return base.updated(changes)
    except ValidationError as exc:
        raise InvalidInput(_problems(exc)) from None


class AdminError(BaseModel):
    """The admin routes' error body (``identity.http``)."""

    error: str
    message: str


_ERRORS: dict[int, str] = {
    401: "no admin credentials",
    403: "credentials of a user without the admin role",
    404: "no such tenant",
    409: "the tenant exists already",
    422: "a field out of bounds, unknown or of the wrong type (named)",
    503: "the database is unavailable",
}


def _answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": AdminError, "description": _ERRORS[code]} for code in codes}


def _tenant_body(*, required: bool) -> dict[str, Any]:
    """The OpenAPI request body of create and update (read by hand: settings and the tenant's
    own fields in one object)."""
    settings = TenantConfig.model_json_schema()["properties"]
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "business_id": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$"},
            "name": {"type": "string", "maxLength": 200},
            "enabled": {"type": "boolean"},
            **settings,
        },
    }
    if required:
        schema["required"] = ["business_id"]
    return {
        "requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}
    }


def tenant_admin_router(service: WaitingRoomService, identity: Any = None) -> APIRouter:
    """Admin routes over ``service``'s tenants. ``identity`` (an ``identity.Identity``, when
    that component runs) authorizes admin users and keeps the audit log."""
    router = APIRouter(route_class=ErrorRoute, tags=["admin"])
    configs = service.configs
    access = service.access
    clock = service.clock

    async def admin(request: Request) -> str:
        """The acting admin's name for the audit log; 401/403 for anyone else."""
        if access.is_admin(request.headers.get("authorization")):
            return "admin-token"
        if identity is not None:
            bearer, api_key = presented_credentials(request)
            principal = await identity.require_admin(bearer, api_key)
            return str(principal.actor)
        raise AuthenticationError("this endpoint needs the admin token")

    async def audit(request: Request, actor: str, action: str, target: str, **detail: Any) -> None:
        if identity is not None:
            await identity.audit.record(actor, action, target, client_address(request), **detail)

    def shown(record: TenantRecord) -> dict[str, Any]:
        return record.as_dict(clock.now())

    def issue(tenant: str) -> tuple[str, TenantKey]:
        secret = new_secret()
        return secret, key_for(tenant, secret, utcnow(clock.now()))

    @router.get("/admin/tenants", responses=_answers(401, 403, 503))
    async def list_tenants(request: Request) -> dict[str, Any]:
        """Every tenant, its settings and its live keys (prefixes only)."""
        await admin(request)
        return {"tenants": [shown(r) for r in await configs.repository.records()]}

    @router.post(
        "/admin/tenants",
        status_code=201,
        responses=_answers(401, 403, 409, 422, 503),
        openapi_extra=_tenant_body(required=True),
    )
    async def create_tenant(request: Request) -> dict[str, Any]:
        """A new tenant (unset settings take the defaults) and its first secret key, shown in
        this answer only."""
        who = await admin(request)
        meta, settings = await _body(request)
        tenant = check_tenant_id(meta.business_id)
        secret, key = issue(tenant)
        record = TenantRecord(
            tenant,
            meta.name if meta.name is not None else tenant,
            True if meta.enabled is None else meta.enabled,
            _config(TenantConfig(), settings),
            keys=(key,),
        )
        await configs.repository.create(record)
        configs.forget(tenant)
        await audit(request, who, "tenant.create", tenant, **meta.model_dump(exclude_none=True))
        created = await configs.repository.record(tenant)
        assert created is not None
        return {**shown(created), "secret_key": secret}

    @router.get("/admin/tenants/{business_id}", responses=_answers(401, 403, 404, 422, 503))
    async def get_tenant(request: Request, business_id: str = _ID) -> dict[str, Any]:
        await admin(request)
        record = await configs.repository.record(business_id)
        if record is None:
            raise NotFound(f"tenant {business_id!r} does not exist")
        return shown(record)

    @router.patch(
        "/admin/tenants/{business_id}",
        responses=_answers(401, 403, 404, 422, 503),
        openapi_extra=_tenant_body(required=False),
    )
    async def update_tenant(request: Request, business_id: str = _ID) -> dict[str, Any]:
        """Change some settings, the name or the switch of a tenant (others keep their value)."""
        who = await admin(request)
        meta, settings = await _body(request)
        if meta.business_id not in (None, business_id):
            raise InvalidInput("business_id cannot be changed")
        record = await configs.repository.record(business_id)
        if record is None:
            raise NotFound(f"tenant {business_id!r} does not exist")
        updated = await configs.repository.update(
            business_id,
            name=meta.name,
            enabled=meta.enabled,
            config=_config(record.config, settings) if settings else None,
        )
        configs.forget(business_id)
        changes = {**meta.model_dump(exclude_none=True, exclude={"business_id"}), **settings}
        await audit(request, who, "tenant.update", business_id, **changes)
        return shown(updated)

    @router.delete("/admin/tenants/{business_id}", responses=_answers(401, 403, 404, 422, 503))
    async def delete_tenant(request: Request, business_id: str = _ID) -> dict[str, Any]:
        """Remove a tenant and its keys (its queue in Redis expires on its own)."""
        who = await admin(request)
        await configs.repository.delete(business_id)
        configs.forget(business_id)
        await audit(request, who, "tenant.delete", business_id)
        return {"message": f"tenant {business_id} deleted"}

    @router.post(
        "/admin/tenants/{business_id}/rotate_secret", responses=_answers(401, 403, 404, 422, 503)
    )
    async def rotate_secret(
        request: Request, body: RotateBody | None = None, business_id: str = _ID
    ) -> dict[str, Any]:
        """A new secret key, shown once; every other key of the tenant stays valid for
        ``overlap_seconds`` more (0: refused from now on, on every replica within the config
        cache's lifetime)."""
        who = await admin(request)
        overlap = (body or RotateBody()).overlap_seconds
        secret, key = issue(business_id)
        until = utcnow(clock.now()) + timedelta(seconds=overlap)
        await configs.repository.rotate_key(key, until)
        record = await configs.repository.record(business_id)
        assert record is not None
        for old in record.keys:
            access.forget(old.prefix)
        await audit(
            request, who, "tenant.rotate_secret", business_id, overlap_seconds=overlap,
            new_prefix=key.prefix,
        )  # fmt: skip
        return {
            "business_id": business_id,
            "secret_key": secret,
            "key": key.as_dict(),
            "previous_keys_valid_until": until.isoformat(),
        }

    return router
