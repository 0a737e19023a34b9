"""``/admin/tenants*``: the operator's levers over the waiting room's tenants, every one audited.

=============================================  ===============================================
``GET /admin/tenants``                         every tenant with its settings and live keys
``POST /admin/tenants``                        a new tenant; the answer shows its secret key,
                                               once
``GET|PATCH|DELETE /admin/tenants/{id}``       one tenant: read, change, remove
``POST /admin/tenants/{id}/rotate_secret``     a new secret key (shown once); the others stay
                                               valid ``overlap_seconds`` more (default 3600)
=============================================  ===============================================

The guard (``guards.tenant_admin``) lets in the admin token (``Authorization: Bearer
<GATEKEEPER_ADMIN_TOKEN>``) or, when the identity component runs, the credentials of a user with
the admin role; each change is written to the audit log. The endpoints validate the request
(bodies strictly: ``"5"`` is not a number; unknown fields are refused) and call
:class:`~gatekeeper.waitingroom.tenant_admin.TenantAdmin`, which does the work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from gatekeeper.endpoints import (
    Answer,
    Call,
    Endpoint,
    Guard,
    Reply,
    Routes,
    json_reply,
    path,
    problem,
)
from gatekeeper.waitingroom.config import TenantConfig
from gatekeeper.waitingroom.guards import tenant_admin
from gatekeeper.waitingroom.tenant_admin import Audit, RotateBody, TenantAdmin

if TYPE_CHECKING:
    from gatekeeper.waitingroom.service import WaitingRoomService

__all__ = ["tenant_admin_endpoints"]

_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_ID = path("business_id", str, max_length=64, pattern=_ID_PATTERN, description="the public id")


def _unset_is_absent(schema: dict[str, Any]) -> None:
    # An unset field is absent, not null: its placeholder default is none of the schema's.
    for field in schema.get("properties", {}).values():
        field.pop("default", None)


_STRICT = ConfigDict(extra="forbid", strict=True, json_schema_extra=_unset_is_absent)

# The settings of a create or update body: TenantConfig's fields and bounds, each optional (an
# unset one keeps its value, or takes the default). Derived, so that the bounds live in one place.
_SETTINGS: dict[str, Any] = {
    name: (int, FieldInfo.merge_field_infos(info, default=None))
    for name, info in TenantConfig.model_fields.items()
}


def _tenant_body(model: str, *, id_required: bool) -> type[BaseModel]:
    business_id: Any = Field(default=... if id_required else None, pattern=_ID_PATTERN)
    return create_model(
        model,
        __config__=_STRICT,
        business_id=(str, business_id),
        name=(str, Field(default=None, max_length=200)),
        enabled=(bool, Field(default=None)),
        **_SETTINGS,
    )


NewTenantBody = _tenant_body("NewTenantBody", id_required=True)
TenantBody = _tenant_body("TenantBody", id_required=False)


class TenantKeyOut(BaseModel):
    key_id: str
    prefix: str
    origin: str
    created_at: str
    expires_at: str | None
    replaced_by: str | None


class TenantOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # (and every setting)

    business_id: str
    name: str
    enabled: bool
    created_at: str | None
    updated_at: str | None
    keys: list[TenantKeyOut]


class NewTenant(TenantOut):
    secret_key: str = Field(description="The tenant's first secret key: shown here only.")


class Tenants(BaseModel):
    tenants: list[TenantOut]


class Rotated(BaseModel):
    business_id: str
    secret_key: str = Field(description="The new secret key: shown here only.")
    key: TenantKeyOut
    previous_keys_valid_until: str


class Message(BaseModel):
    message: str


_NOT_FOUND = {404: problem("No such tenant.")}
_DOWN = {503: problem("The database is unavailable.", **{"Retry-After": "Seconds."})}


def tenant_admin_endpoints(
    service: WaitingRoomService, *, users: Guard | None = None, audit: Audit | None = None
) -> list[Endpoint]:
    """Admin endpoints over ``service``'s tenants. ``users``: the identity's admin guard (admin
    users may call too); ``audit``: the identity's audit log (``AuditLog.record``)."""
    ops = TenantAdmin(service, audit)
    routes = Routes(tags=("admin",), guard=tenant_admin(service.access, users), responses=_DOWN)

    def actor(call: Call) -> str:
        return str(getattr(call.principal, "actor", call.principal))

    def changes(call: Call) -> dict[str, Any]:
        return dict(call.data.model_dump(exclude_unset=True)) if call.data is not None else {}

    @routes.get("/admin/tenants", responses={200: Answer("Every tenant.", Tenants)})
    async def list_tenants(call: Call) -> Reply:
        """Every tenant, its settings and its live keys (prefixes only)."""
        return json_reply(await ops.list())

    @routes.post(
        "/admin/tenants",
        body=NewTenantBody,
        responses={
            201: Answer("The new tenant and its secret key.", NewTenant),
            409: problem("The tenant exists already."),
        },
    )
    async def create_tenant(call: Call) -> Reply:
        """A new tenant (unset settings take the defaults) and its first secret key, shown in
        this answer only."""
        created = await ops.create(actor(call), call.client_ip, changes(call))
        return json_reply(created, 201)

    tenant = {200: Answer("The tenant.", TenantOut), **_NOT_FOUND}

    @routes.get("/admin/tenants/{business_id}", params=(_ID,), responses=tenant)
    async def get_tenant(call: Call) -> Reply:
        """One tenant, its settings and its live keys."""
        return json_reply(await ops.get(call.params["business_id"]))

    @routes.patch("/admin/tenants/{business_id}", params=(_ID,), body=TenantBody, responses=tenant)
    async def update_tenant(call: Call) -> Reply:
        """Change some settings, the name or the switch of a tenant (others keep their value)."""
        tenant_id = call.params["business_id"]
        return json_reply(await ops.update(actor(call), call.client_ip, tenant_id, changes(call)))

    @routes.delete(
        "/admin/tenants/{business_id}",
        params=(_ID,),
        responses={200: Answer("Removed.", Message), **_NOT_FOUND},
    )
    async def delete_tenant(call: Call) -> Reply:
        """Remove a tenant and its keys (its queue in Redis expires on its own)."""
        return json_reply(await ops.delete(actor(call), call.client_ip, call.params["business_id"]))

    @routes.post(
        "/admin/tenants/{business_id}/rotate_secret",
        params=(_ID,),
        body=RotateBody,
        body_required=False,
        responses={200: Answer("The new secret key.", Rotated), **_NOT_FOUND},
    )
    async def rotate_secret(call: Call) -> Reply:
        """A new secret key, shown once; every other key of the tenant stays valid for
        ``overlap_seconds`` more (0: refused from now on, on every replica within the config
        cache's lifetime)."""
        body: RotateBody = call.data or RotateBody()
        tenant_id = call.params["business_id"]
        rotated = await ops.rotate(actor(call), call.client_ip, tenant_id, body.overlap_seconds)
        return json_reply(rotated)

    return routes.endpoints
