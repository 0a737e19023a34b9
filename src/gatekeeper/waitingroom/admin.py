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
written to its audit log. The routes authorize and read the request; what they do is
:class:`~gatekeeper.waitingroom.tenant_admin.TenantAdmin`'s.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from gatekeeper.errors import AuthenticationError, InvalidInput
from gatekeeper.identity.http import ErrorRoute, client_address, presented_credentials
from gatekeeper.waitingroom.config import TenantConfig
from gatekeeper.waitingroom.tenant_admin import RotateBody, TenantAdmin

if TYPE_CHECKING:
    from gatekeeper.waitingroom.service import WaitingRoomService

__all__ = ["tenant_admin_router"]

_ID = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


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


async def _json(request: Request) -> object:
    try:
        return json.loads(await request.body() or b"{}")
    except ValueError:
        raise InvalidInput("body must be a JSON object") from None


def tenant_admin_router(service: WaitingRoomService, identity: Any = None) -> APIRouter:
    """Admin routes over ``service``'s tenants. ``identity`` (an ``identity.Identity``, when
    that component runs) authorizes admin users and keeps the audit log."""
    router = APIRouter(route_class=ErrorRoute, tags=["admin"])
    ops = TenantAdmin(service, identity.audit.record if identity is not None else None)
    access = service.access

    async def admin(request: Request) -> tuple[str, str]:
        """The acting admin (for the audit log) and the caller's address; 401/403 else."""
        ip = client_address(request)
        if access.is_admin(request.headers.get("authorization")):
            return "admin-token", ip
        if identity is not None:
            bearer, api_key = presented_credentials(request)
            principal = await identity.require_admin(bearer, api_key)
            return str(principal.actor), ip
        raise AuthenticationError("this endpoint needs the admin token")

    @router.get("/admin/tenants", responses=_answers(401, 403, 503))
    async def list_tenants(request: Request) -> dict[str, Any]:
        """Every tenant, its settings and its live keys (prefixes only)."""
        await admin(request)
        return await ops.list()

    @router.post(
        "/admin/tenants",
        status_code=201,
        responses=_answers(401, 403, 409, 422, 503),
        openapi_extra=_tenant_body(required=True),
    )
    async def create_tenant(request: Request) -> dict[str, Any]:
        """A new tenant (unset settings take the defaults) and its first secret key, shown in
        this answer only."""
        who, ip = await admin(request)
        return await ops.create(who, ip, await _json(request))

    @router.get("/admin/tenants/{business_id}", responses=_answers(401, 403, 404, 422, 503))
    async def get_tenant(request: Request, business_id: str = _ID) -> dict[str, Any]:
        """One tenant, its settings and its live keys."""
        await admin(request)
        return await ops.get(business_id)

    @router.patch(
        "/admin/tenants/{business_id}",
        responses=_answers(401, 403, 404, 422, 503),
        openapi_extra=_tenant_body(required=False),
    )
    async def update_tenant(request: Request, business_id: str = _ID) -> dict[str, Any]:
        """Change some settings, the name or the switch of a tenant (others keep their value)."""
        who, ip = await admin(request)
        return await ops.update(who, ip, business_id, await _json(request))

    @router.delete("/admin/tenants/{business_id}", responses=_answers(401, 403, 404, 422, 503))
    async def delete_tenant(request: Request, business_id: str = _ID) -> dict[str, Any]:
        """Remove a tenant and its keys (its queue in Redis expires on its own)."""
        who, ip = await admin(request)
        return await ops.delete(who, ip, business_id)

    @router.post(
        "/admin/tenants/{business_id}/rotate_secret", responses=_answers(401, 403, 404, 422, 503)
    )
    async def rotate_secret(
        request: Request, body: RotateBody | None = None, business_id: str = _ID
    ) -> dict[str, Any]:
        """A new secret key, shown once; every other key of the tenant stays valid for
        ``overlap_seconds`` more (0: refused from now on, on every replica within the config
        cache's lifetime)."""
        who, ip = await admin(request)
        overlap = (body or RotateBody()).overlap_seconds
        return await ops.rotate(who, ip, business_id, overlap)

    return router
