"""The ``/admin/*`` routes and ``/logs``: the operator's levers, every one audited.

Callers present ``Authorization: Bearer <GATEKEEPER_ADMIN_TOKEN>`` or the token (or key) of a
user with the admin role; anyone else gets 401 or 403. Each change is written to the audit log
with the actor, the target, the caller's address and the request's parameters. The waiting
room's tenants have their admin routes in ``gatekeeper.waitingroom.admin`` (same rules).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from gatekeeper.errors import InvalidInput
from gatekeeper.identity.http import (
    ErrorRoute,
    StrictBody,
    client_address,
    presented_credentials,
)
from gatekeeper.identity.principal import Principal
from gatekeeper.identity.service import Identity
from gatekeeper.identity.users import UserInfo

__all__ = ["admin_router"]

_Body = StrictBody


class TierChange(_Body):
    tier: str = Field(max_length=64)
    user_id: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=320)
    api_key: str | None = Field(default=None, max_length=200)


class KeyRef(_Body):
    api_key: str | None = Field(default=None, max_length=200)
    key_id: str | None = Field(default=None, max_length=64)
    prefix: str | None = Field(default=None, max_length=16)


class UserChange(_Body):
    tier: str | None = Field(default=None, max_length=64)
    role: str | None = Field(default=None, max_length=16)
    disabled: bool | None = None


class TierBody(_Body):
    policies: list[dict[str, Any]] = Field(max_length=8)
    description: str | None = Field(default=None, max_length=200)
    priority: int | None = Field(default=None, ge=-1000, le=1000)


class IpRuleBody(_Body):
    cidr: str = Field(max_length=64)
    action: str = Field(max_length=8)
    note: str = Field(default="", max_length=200)
    ttl_seconds: int | None = Field(default=None, gt=0, le=365 * 86400)


class SubjectBody(_Body):
    subject: str = Field(min_length=1, max_length=200)


def admin_router(identity: Identity) -> APIRouter:
    """Admin routes bound to ``identity``."""
    router = APIRouter(route_class=ErrorRoute, tags=["admin"])

    async def admin(request: Request) -> Principal:
        bearer, api_key = presented_credentials(request)
        return await identity.require_admin(bearer, api_key)

    async def audit(
        request: Request, who: Principal, action: str, target: str, **detail: Any
    ) -> None:
        await identity.audit.record(who.actor, action, target, client_address(request), **detail)

    # -- users and tiers ----------------------------------------------------------------------

    @router.get("/admin/users")
    async def list_users(
        request: Request,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        """Users, oldest first."""
        await admin(request)
        users, total = await identity.users.list(limit=limit, offset=offset)
        return {"users": [u.as_dict() for u in users], "total": total}

    @router.get("/admin/users/{user_id}")
    async def get_user(user_id: str, request: Request) -> dict[str, Any]:
        """One user with their API keys."""
        await admin(request)
        user = await identity.users.get(user_id)
        keys = await identity.api_keys.list(user_id)
        return {**user.as_dict(), "api_keys": [k.as_dict() for k in keys]}

    @router.patch("/admin/users/{user_id}")
    async def change_user(user_id: str, body: UserChange, request: Request) -> dict[str, Any]:
        """Change a user's tier, role or disabled flag."""
        who = await admin(request)
        user = await identity.users.update(
            user_id, tier=body.tier, role=body.role, disabled=body.disabled
        )
        await audit(request, who, "user.update", user_id, **body.model_dump(exclude_none=True))
        return user.as_dict()

    @router.post("/admin/upgrade_tier")
    async def upgrade_tier(body: TierChange, request: Request) -> dict[str, Any]:
        """Move a user (named by ``user_id``, ``email`` or one of their ``api_key``s) to a tier;
        the new limits apply on every replica within a second."""
        who = await admin(request)
        target: UserInfo
        if body.user_id:
            target = await identity.users.get(body.user_id)
        elif body.email:
            target = await identity.users.find(body.email)
        elif body.api_key:
            key = await identity.api_keys.find(body.api_key)
            target = await identity.users.get(key.user_id)
        else:
            raise InvalidInput("name the user by user_id, email or api_key")
        await identity.tiers.get(body.tier)  # 404 naming an unknown tier
        user = await identity.users.update(target.id, tier=body.tier)
        await audit(request, who, "user.tier", user.id, old=target.tier, new=body.tier)
        return {"message": f"tier changed to {body.tier}", **user.as_dict()}

    @router.get("/admin/tiers")
    async def list_tiers(request: Request) -> dict[str, Any]:
        await admin(request)
        return {"tiers": [t.as_dict() for t in await identity.tiers.list_all()]}

    @router.put("/admin/tiers/{name}")
    async def put_tier(name: str, body: TierBody, request: Request, response: Response) -> Any:
        """Create or replace a tier and its policies (validated: a bad rate is a 422)."""
        who = await admin(request)
        info, created = await identity.tiers.put(
            name, body.policies, description=body.description, priority=body.priority
        )
        response.status_code = 201 if created else 200
        await audit(request, who, "tier.put", name, policies=body.policies, created=created)
        return info.as_dict()

    @router.delete("/admin/tiers/{name}")
    async def delete_tier(name: str, request: Request) -> dict[str, Any]:
        who = await admin(request)
        await identity.tiers.delete(name)
        await audit(request, who, "tier.delete", name)
        return {"message": f"tier {name} deleted"}

    # -- keys ---------------------------------------------------------------------------------

    async def find_key(ref: KeyRef) -> str:
        if ref.key_id:
            return (await identity.api_keys.get(ref.key_id)).id
        if ref.api_key or ref.prefix:
            return (await identity.api_keys.find(str(ref.api_key or ref.prefix))).id
        raise InvalidInput("name the key by api_key, key_id or prefix")

    async def set_blocked(ref: KeyRef, request: Request, blocked: bool) -> dict[str, Any]:
        who = await admin(request)
        info = await identity.api_keys.set_blocked(await find_key(ref), blocked)
        action = "key.block" if blocked else "key.unblock"
        await audit(request, who, action, info.id, prefix=info.prefix)
        return info.as_dict()

    @router.post("/admin/block_key")
    async def block_key(body: KeyRef, request: Request) -> dict[str, Any]:
        """Block a key (403 on every replica within a second); reversible."""
        return await set_blocked(body, request, True)

    @router.post("/admin/unblock_key")
    async def unblock_key(body: KeyRef, request: Request) -> dict[str, Any]:
        return await set_blocked(body, request, False)

    @router.post("/admin/revoke_key")
    async def revoke_key(body: KeyRef, request: Request) -> dict[str, Any]:
        """Revoke a key for good."""
        who = await admin(request)
        info = await identity.api_keys.revoke(await find_key(body))
        await audit(request, who, "key.revoke", info.id, prefix=info.prefix)
        return info.as_dict()

    # -- IP lists and bans --------------------------------------------------------------------

    @router.get("/admin/ip_rules")
    async def list_ip_rules(request: Request) -> dict[str, Any]:
        await admin(request)
        return {"rules": [r.as_dict() for r in await identity.ip_rules.list_all()]}

    @router.post("/admin/ip_rules", status_code=201)
    async def add_ip_rule(body: IpRuleBody, request: Request) -> dict[str, Any]:
        """Allow or deny an address or CIDR, optionally for ``ttl_seconds``."""
        who = await admin(request)
        rule = await identity.ip_rules.add(
            body.cidr, body.action, note=body.note, ttl_seconds=body.ttl_seconds
        )
        await audit(request, who, f"ip.{body.action}", rule.cidr, rule_id=rule.id, note=body.note)
        return rule.as_dict()

    @router.delete("/admin/ip_rules/{rule_id}")
    async def delete_ip_rule(rule_id: int, request: Request) -> dict[str, Any]:
        who = await admin(request)
        rule = await identity.ip_rules.remove(rule_id)
        await audit(request, who, "ip.remove", rule.cidr, rule_id=rule_id)
        return rule.as_dict()

    @router.get("/admin/bans")
    async def ban_status(
        request: Request, subject: str = Query(min_length=1, max_length=200)
    ) -> dict[str, Any]:
        """How long ``subject`` (``ip:<addr>`` or ``key:<id>``) stays banned."""
        await admin(request)
        remaining = await identity.bans.remaining(subject)
        return {"subject": subject, "banned": remaining > 0, "remaining": round(remaining, 3)}

    @router.post("/admin/unban")
    async def unban(body: SubjectBody, request: Request) -> dict[str, Any]:
        who = await admin(request)
        await identity.bans.lift(body.subject)
        await audit(request, who, "ban.lift", body.subject)
        return {"subject": body.subject, "banned": False}

    # -- reading the record -------------------------------------------------------------------

    @router.get("/admin/audit")
    async def read_audit(
        request: Request,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
        action: str | None = Query(None, max_length=64),
    ) -> dict[str, Any]:
        """Who did what, when and from where; newest first."""
        await admin(request)
        records, total = await identity.audit.list(limit=limit, offset=offset, action=action)
        return {"entries": [r.as_dict() for r in records], "total": total}

    @router.get("/admin/usage/{key_id}")
    async def key_usage(
        key_id: str,
        request: Request,
        granularity: str = Query("hour", max_length=8),
        count: int = Query(24, ge=1, le=400),
    ) -> dict[str, Any]:
        """Any key's usage history."""
        await admin(request)
        info = await identity.api_keys.get(key_id)
        history = await identity.usage.history(f"key:{info.id}", granularity, count)
        return {"key_id": info.id, "granularity": granularity, "buckets": history}

    @router.get("/logs")
    async def logs(request: Request, limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """The most recent requests decided by this deployment."""
        await admin(request)
        return {"entries": await identity.request_log.recent(limit)}

    return router
