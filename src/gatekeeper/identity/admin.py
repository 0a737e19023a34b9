"""The ``/admin/*`` endpoints and ``/logs``: the operator's levers, every one audited.

Callers present ``Authorization: Bearer <GATEKEEPER_ADMIN_TOKEN>`` or the token (or key) of a
user with the admin role; anyone else gets 401 or 403. Each change is written to the audit log
with the actor, the target, the caller's address and the request's parameters. The waiting
room's tenants have their admin endpoints in ``gatekeeper.waitingroom.admin`` (same guard).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from gatekeeper.endpoints import (
    Answer,
    Call,
    Endpoint,
    Reply,
    Routes,
    json_reply,
    path,
    problem,
    query,
)
from gatekeeper.errors import InvalidInput
from gatekeeper.identity import schemas
from gatekeeper.identity.http import IdentityGuards, StrictBody
from gatekeeper.identity.service import Identity
from gatekeeper.identity.users import UserInfo

__all__ = ["admin_endpoints"]

# Bounds every engine takes (PostgreSQL's INTEGER is 32-bit; SQLite's OFFSET 64-bit).
MAX_INT32 = 2**31 - 1

_Body = StrictBody
_LIMIT = query("limit", int, default=100, ge=1, le=1000, description="at most this many")
_OFFSET = query("offset", int, default=0, ge=0, le=MAX_INT32, description="skip this many")
_USER_ID = path("user_id", str, max_length=64)
_TIER = path("name", str, max_length=64)
_NOT_FOUND = {404: problem("It does not exist.")}


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


def _unbanned(subject: str, actor: str) -> tuple[str, dict[str, Any]]:
    """The event of lifting ``subject``'s ban (``ip:<addr>`` or ``key:<id>``)."""
    kind, _, name = subject.partition(":")
    if kind == "ip":
        return "ip.unbanned", {"ip": name, "actor": actor}
    return "key.unbanned", {"key_id": name, "actor": actor}


def admin_endpoints(identity: Identity, guards: IdentityGuards) -> list[Endpoint]:
    """Admin endpoints bound to ``identity``."""
    routes = Routes(tags=("admin",), guard=guards.admin)

    async def audit(call: Call, action: str, target: str, **detail: Any) -> None:
        who = call.principal
        await identity.audit.record(who.actor, action, target, call.client_ip, **detail)

    # -- users and tiers ----------------------------------------------------------------------

    @routes.get(
        "/admin/users",
        params=(_LIMIT, _OFFSET),
        responses={200: Answer("A page of users.", schemas.UserPage)},
    )
    async def list_users(call: Call) -> Reply:
        """Users, oldest first."""
        users, total = await identity.users.list(
            limit=call.params["limit"], offset=call.params["offset"]
        )
        return json_reply({"users": [u.as_dict() for u in users], "total": total})

    @routes.get(
        "/admin/users/{user_id}",
        params=(_USER_ID,),
        responses={200: Answer("The user and their keys.", schemas.UserDetail), **_NOT_FOUND},
    )
    async def get_user(call: Call) -> Reply:
        """One user with their API keys."""
        user_id = call.params["user_id"]
        user = await identity.users.get(user_id)
        keys = await identity.api_keys.list(user_id)
        return json_reply({**user.as_dict(), "api_keys": [k.as_dict() for k in keys]})

    @routes.patch(
        "/admin/users/{user_id}",
        params=(_USER_ID,),
        body=UserChange,
        responses={200: Answer("The changed user.", schemas.UserOut), **_NOT_FOUND},
    )
    async def change_user(call: Call) -> Reply:
        """Change a user's tier, role or disabled flag."""
        user_id = call.params["user_id"]
        body: UserChange = call.data
        user = await identity.users.update(
            user_id, tier=body.tier, role=body.role, disabled=body.disabled
        )
        await audit(call, "user.update", user_id, **body.model_dump(exclude_none=True))
        return json_reply(user.as_dict())

    @routes.post(
        "/admin/upgrade_tier",
        body=TierChange,
        responses={200: Answer("The user, on the new tier.", schemas.Message), **_NOT_FOUND},
    )
    async def upgrade_tier(call: Call) -> Reply:
        """Move a user (named by ``user_id``, ``email`` or one of their ``api_key``s) to a tier;
        the new limits apply on every replica within a second."""
        body: TierChange = call.data
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
        await audit(call, "user.tier", user.id, old=target.tier, new=body.tier)
        change = {"user_id": user.id, "old": target.tier, "new": body.tier}
        identity.emit("tier.changed", {**change, "actor": call.principal.actor}, f"user:{user.id}")
        return json_reply({"message": f"tier changed to {body.tier}", **user.as_dict()})

    @routes.get("/admin/tiers", responses={200: Answer("Every tier.", schemas.Tiers)})
    async def list_tiers(call: Call) -> Reply:
        """Every tier with its policies."""
        return json_reply({"tiers": [t.as_dict() for t in await identity.tiers.list_all()]})

    @routes.put(
        "/admin/tiers/{name}",
        params=(_TIER,),
        body=TierBody,
        responses={
            200: Answer("The tier, replaced.", schemas.TierOut),
            201: Answer("The tier, created.", schemas.TierOut),
        },
    )
    async def put_tier(call: Call) -> Reply:
        """Create or replace a tier and its policies (validated: a bad rate is a 422)."""
        name = call.params["name"]
        body: TierBody = call.data
        info, created = await identity.tiers.put(
            name, body.policies, description=body.description, priority=body.priority
        )
        await audit(call, "tier.put", name, policies=body.policies, created=created)
        return json_reply(info.as_dict(), 201 if created else 200)

    @routes.delete(
        "/admin/tiers/{name}",
        params=(_TIER,),
        responses={
            200: Answer("Message.", schemas.Message),
            409: problem("Users are still on the tier."),
            **_NOT_FOUND,
        },
    )
    async def delete_tier(call: Call) -> Reply:
        """Delete a tier nobody is on."""
        name = call.params["name"]
        await identity.tiers.delete(name)
        await audit(call, "tier.delete", name)
        return json_reply({"message": f"tier {name} deleted"})

    # -- keys ---------------------------------------------------------------------------------

    async def find_key(ref: KeyRef) -> str:
        if ref.key_id:
            return (await identity.api_keys.get(ref.key_id)).id
        if ref.api_key or ref.prefix:
            return (await identity.api_keys.find(str(ref.api_key or ref.prefix))).id
        raise InvalidInput("name the key by api_key, key_id or prefix")

    async def set_blocked(call: Call, blocked: bool) -> Reply:
        who = call.principal.actor
        info = await identity.api_keys.set_blocked(await find_key(call.data), blocked)
        await audit(call, "key.block" if blocked else "key.unblock", info.id, prefix=info.prefix)
        kind, key = ("key.blocked" if blocked else "key.unblocked"), f"key:{info.id}"
        identity.emit(kind, {"key_id": info.id, "prefix": info.prefix, "actor": who}, key)
        return json_reply(info.as_dict())

    key_answers = {200: Answer("The key.", schemas.ApiKeyOut), **_NOT_FOUND}

    @routes.post("/admin/block_key", body=KeyRef, responses=key_answers)
    async def block_key(call: Call) -> Reply:
        """Block a key (403 on every replica within a second); reversible."""
        return await set_blocked(call, True)

    @routes.post("/admin/unblock_key", body=KeyRef, responses=key_answers)
    async def unblock_key(call: Call) -> Reply:
        """Unblock a key."""
        return await set_blocked(call, False)

    @routes.post("/admin/revoke_key", body=KeyRef, responses=key_answers)
    async def revoke_key(call: Call) -> Reply:
        """Revoke a key for good."""
        info = await identity.api_keys.revoke(await find_key(call.data))
        await audit(call, "key.revoke", info.id, prefix=info.prefix)
        return json_reply(info.as_dict())

    # -- IP lists and bans --------------------------------------------------------------------

    @routes.get("/admin/ip_rules", responses={200: Answer("Every rule.", schemas.IpRules)})
    async def list_ip_rules(call: Call) -> Reply:
        """The allow and deny rules."""
        return json_reply({"rules": [r.as_dict() for r in await identity.ip_rules.list_all()]})

    @routes.post(
        "/admin/ip_rules",
        body=IpRuleBody,
        responses={201: Answer("The new rule.", schemas.IpRuleOut)},
    )
    async def add_ip_rule(call: Call) -> Reply:
        """Allow or deny an address or CIDR, optionally for ``ttl_seconds``."""
        body: IpRuleBody = call.data
        rule = await identity.ip_rules.add(
            body.cidr, body.action, note=body.note, ttl_seconds=body.ttl_seconds
        )
        await audit(call, f"ip.{body.action}", rule.cidr, rule_id=rule.id, note=body.note)
        return json_reply(rule.as_dict(), 201)

    @routes.delete(
        "/admin/ip_rules/{rule_id}",
        params=(path("rule_id", int, ge=1, le=MAX_INT32),),
        responses={200: Answer("The removed rule.", schemas.IpRuleOut), **_NOT_FOUND},
    )
    async def delete_ip_rule(call: Call) -> Reply:
        """Remove a rule."""
        rule_id = call.params["rule_id"]
        rule = await identity.ip_rules.remove(rule_id)
        await audit(call, "ip.remove", rule.cidr, rule_id=rule_id)
        return json_reply(rule.as_dict())

    @routes.get(
        "/admin/bans",
        params=(query("subject", str, required=True, min_length=1, max_length=200),),
        responses={200: Answer("The subject's ban.", schemas.Bans)},
    )
    async def ban_status(call: Call) -> Reply:
        """How long ``subject`` (``ip:<addr>`` or ``key:<id>``) stays banned."""
        subject = call.params["subject"]
        remaining = await identity.bans.remaining(subject)
        body = {"subject": subject, "banned": remaining > 0, "remaining": round(remaining, 3)}
        return json_reply(body)

    @routes.post("/admin/unban", body=SubjectBody, responses={200: Answer("Lifted.", schemas.Bans)})
    async def unban(call: Call) -> Reply:
        """Lift a ban now."""
        body: SubjectBody = call.data
        await identity.bans.lift(body.subject)
        await audit(call, "ban.lift", body.subject)
        identity.emit(*_unbanned(body.subject, call.principal.actor), body.subject)
        return json_reply({"subject": body.subject, "banned": False})

    # -- reading the record -------------------------------------------------------------------

    @routes.get(
        "/admin/audit",
        params=(_LIMIT, _OFFSET, query("action", str, max_length=64)),
        responses={200: Answer("A page of the audit log.", schemas.AuditPage)},
    )
    async def read_audit(call: Call) -> Reply:
        """Who did what, when and from where; newest first."""
        params = call.params
        records, total = await identity.audit.list(
            limit=params["limit"], offset=params["offset"], action=params["action"]
        )
        return json_reply({"entries": [r.as_dict() for r in records], "total": total})

    @routes.get(
        "/admin/usage/{key_id}",
        params=(
            path("key_id", str, max_length=64),
            query("granularity", str, default="hour", choices=("hour", "day")),
            query("count", int, default=24, ge=1, le=400),
        ),
        responses={200: Answer("The key's history.", schemas.History), **_NOT_FOUND},
    )
    async def key_usage(call: Call) -> Reply:
        """Any key's usage history."""
        params = call.params
        info = await identity.api_keys.get(params["key_id"])
        granularity = params["granularity"]
        history = await identity.usage.history(f"key:{info.id}", granularity, params["count"])
        return json_reply({"key_id": info.id, "granularity": granularity, "buckets": history})

    @routes.get(
        "/logs",
        params=(query("limit", int, default=100, ge=1, le=1000),),
        responses={200: Answer("The most recent decisions.", schemas.LogEntries)},
    )
    async def logs(call: Call) -> Reply:
        """The most recent requests decided by this deployment."""
        return json_reply({"entries": await identity.request_log.recent(call.params["limit"])})

    return routes.endpoints
