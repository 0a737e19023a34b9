"""The ``/auth/*`` endpoints and the seeds' ``/usage`` endpoints.

Login and registration are throttled per IP and (login) per account through the rate-limit
engine; the answer to a bad login is the same whether the account exists or not.
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
from gatekeeper.errors import AuthenticationError, PermissionDenied, RateLimitExceeded
from gatekeeper.identity import schemas
from gatekeeper.identity.http import IdentityGuards, StrictBody, presented_credentials
from gatekeeper.identity.passwords import MAX_PASSWORD_LENGTH
from gatekeeper.identity.service import Identity
from gatekeeper.identity.tiers import DEFAULT_TIER
from gatekeeper.limits.policy import Check

__all__ = ["auth_endpoints"]


class Credentials(StrictBody):
    # Lengths are checked generously here and precisely (with a clear message) by the services.
    email: str = Field(max_length=320)
    password: str = Field(max_length=4 * MAX_PASSWORD_LENGTH)
    tier: str | None = Field(default=None, max_length=64)


class LoginBody(StrictBody):
    email: str = Field(max_length=320)
    password: str = Field(max_length=4 * MAX_PASSWORD_LENGTH)


class RefreshBody(StrictBody):
    refresh_token: str = Field(max_length=8192)


class NewKeyBody(StrictBody):
    name: str = Field(default="", max_length=100)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class RotateBody(StrictBody):
    overlap_seconds: int = Field(default=3600, ge=0, le=30 * 86400)


_THROTTLED = {429: problem("Too many attempts from this address or account.", **{
    "Retry-After": "Seconds to wait."
})}  # fmt: skip
_KEY_ID = path("key_id", str, max_length=64, description="the key's id")
_GRANULARITY = query("granularity", str, default="hour", choices=("hour", "day"))
_COUNT = query("count", int, default=24, ge=1, le=400)


def auth_endpoints(identity: Identity, guards: IdentityGuards) -> list[Endpoint]:
    """Registration, login, tokens, API keys and usage."""
    routes = Routes(tags=("auth",), guard=guards.ready)

    async def throttle(*checks: Check) -> None:
        decision = await identity.limiter.decide(list(checks))
        if not decision.allowed:
            raise RateLimitExceeded(decision)

    @routes.post(
        "/auth/register",
        body=Credentials,
        responses={
            201: Answer("The account, logged in.", schemas.Registered),
            403: problem("New accounts start on the free tier."),
            409: problem("The email is taken."),
            **_THROTTLED,
        },
    )
    async def register(call: Call) -> Reply:
        """Create an account on the free tier and log it in."""
        body: Credentials = call.data
        await throttle(Check(identity.register_ip_policy, f"ip:{call.client_ip}"))
        if body.tier not in (None, DEFAULT_TIER):
            raise PermissionDenied(
                f"new accounts start on the {DEFAULT_TIER!r} tier; an admin can upgrade them"
            )
        pair = await identity.register(body.email, body.password)
        return json_reply({**pair.as_dict(), "user": pair.user.as_dict()}, 201)

    @routes.post(
        "/auth/login",
        body=LoginBody,
        responses={
            200: Answer("A new token pair.", schemas.Tokens),
            401: problem("Wrong email or password.", **{"WWW-Authenticate": "Bearer"}),
            **_THROTTLED,
        },
    )
    async def login(call: Call) -> Reply:
        """Exchange email and password for an access and a refresh token."""
        body: LoginBody = call.data
        account = body.email.strip().lower()[:320]
        await throttle(
            Check(identity.login_ip_policy, f"ip:{call.client_ip}"),
            Check(identity.login_account_policy, f"account:{account}"),
        )
        try:
            user = await identity.users.authenticate(body.email, body.password)
        except AuthenticationError:
            identity.login_failed(call.client_ip, account)
            raise
        return json_reply((await identity.sessions.start(user)).as_dict())

    @routes.post(
        "/auth/refresh",
        body=RefreshBody,
        responses={
            200: Answer("A new token pair.", schemas.Tokens),
            401: problem("The refresh token is invalid, spent or revoked.", **{
                "WWW-Authenticate": "Bearer"
            }),
        },
    )  # fmt: skip
    async def refresh(call: Call) -> Reply:
        """Spend a refresh token for a new pair (each refresh token works once)."""
        body: RefreshBody = call.data
        return json_reply((await identity.sessions.refresh(body.refresh_token)).as_dict())

    @routes.post(
        "/auth/logout",
        responses={
            200: Answer("Logged out.", schemas.Message),
            401: problem("No valid access token.", **{"WWW-Authenticate": "Bearer"}),
        },
    )
    async def logout(call: Call) -> Reply:
        """Revoke this session: the access token and every refresh token of its login."""
        bearer, _ = presented_credentials(call)
        if bearer is None:
            raise AuthenticationError("logout needs the access token as Authorization: Bearer")
        _, claims = await identity.sessions.verify_access(bearer)
        await identity.sessions.logout(claims)
        return json_reply({"message": "logged out"})

    @routes.get(
        "/auth/me",
        guard=guards.user,
        responses={200: Answer("The caller.", schemas.Me), 404: problem("The user is gone.")},
    )
    async def me(call: Call) -> Reply:
        """The caller's account, tier and limits (access token or API key)."""
        principal = call.principal
        if principal.via == "admin_token":
            return json_reply({"role": "admin", "via": "admin_token"})
        user = await identity.users.get(principal.user_id)
        tier = await identity.tiers.get(user.tier)
        return json_reply({**user.as_dict(), "via": principal.via, "limits": tier.policies})

    @routes.post(
        "/auth/create_api_key",
        guard=guards.jwt_user,
        body=NewKeyBody,
        body_required=False,
        responses={
            201: Answer("The key; its secret is shown here only.", schemas.NewKey),
            404: problem("The user is gone."),
            409: problem("No unique prefix could be allocated; retry."),
        },
    )
    async def create_api_key(call: Call) -> Reply:
        """A new API key; the secret is in this response and nowhere else, ever."""
        body: NewKeyBody = call.data or NewKeyBody()
        new = await identity.api_keys.create(
            call.principal.user_id, body.name, expires_in_days=body.expires_in_days
        )
        return json_reply({"api_key": new.secret, **new.info.as_dict()}, 201)

    @routes.get(
        "/auth/api_keys",
        guard=guards.jwt_user,
        responses={200: Answer("The caller's keys.", schemas.KeyList)},
    )
    async def list_keys(call: Call) -> Reply:
        """The caller's keys (prefixes and metadata, never secrets)."""
        keys = await identity.api_keys.list(call.principal.user_id)
        return json_reply({"keys": [k.as_dict() for k in keys]})

    @routes.post(
        "/auth/api_keys/{key_id}/revoke",
        guard=guards.jwt_user,
        params=(_KEY_ID,),
        responses={
            200: Answer("The revoked key.", schemas.ApiKeyOut),
            404: problem("The caller has no such key."),
        },
    )
    async def revoke_key(call: Call) -> Reply:
        """Revoke one of the caller's keys for good."""
        key_id = call.params["key_id"]
        info = await identity.api_keys.revoke(key_id, owner=call.principal.user_id)
        return json_reply(info.as_dict())

    @routes.post(
        "/auth/api_keys/{key_id}/rotate",
        guard=guards.jwt_user,
        params=(_KEY_ID,),
        body=RotateBody,
        body_required=False,
        responses={
            201: Answer("The successor key.", schemas.RotatedKey),
            404: problem("The caller has no such key."),
            409: problem("The key is revoked or expired."),
        },
    )
    async def rotate_key(call: Call) -> Reply:
        """A successor key; the old one keeps working for ``overlap_seconds``."""
        key_id = call.params["key_id"]
        body: RotateBody = call.data or RotateBody()
        new = await identity.api_keys.rotate(
            key_id, owner=call.principal.user_id, overlap_seconds=body.overlap_seconds
        )
        return json_reply({"api_key": new.secret, **new.info.as_dict(), "replaces": key_id}, 201)

    @routes.get(
        "/usage",
        guard=guards.key_user,
        params=(query("api_key", str, max_length=200, description="the key (or X-API-Key)"),),
        responses={200: Answer("The key's limits and counts.", schemas.Usage)},
    )
    async def usage(call: Call) -> Reply:
        """The key's tier, its limits with what remains now, and this hour's and day's counts."""
        principal = call.principal
        policies = await identity.policies_for(principal)
        decision = await identity.limiter.decide(
            [Check(p, principal.subject, 0, peek=True) for p in policies]
        )
        limits = [
            {
                "policy": r.policy,
                "limit": r.limit,
                "remaining": r.remaining,
                "reset_after": round(r.reset_after, 3),
            }
            for r in decision.results
        ]
        totals = await identity.usage.totals(principal.subject)
        body: dict[str, Any] = {
            "key_id": principal.key_id,
            "tier": principal.tier,
            "limits": limits,
            **totals,
        }
        return json_reply(body, headers=[(b"cache-control", b"no-store")])

    @routes.get(
        "/usage/history",
        guard=guards.key_user,
        params=(
            query("api_key", str, max_length=200, description="the key (or X-API-Key)"),
            _GRANULARITY,
            _COUNT,
        ),
        responses={200: Answer("Requests and denials per bucket.", schemas.History)},
    )
    async def usage_history(call: Call) -> Reply:
        """Requests and denials of the key per hour or day, oldest first."""
        principal = call.principal
        granularity = call.params["granularity"]
        history = await identity.usage.history(principal.subject, granularity, call.params["count"])
        return json_reply(
            {"key_id": principal.key_id, "granularity": granularity, "buckets": history}
        )

    return routes.endpoints
