"""The ``/auth/*`` routes and the seeds' ``/usage`` endpoints.

Login and registration are throttled per IP and (login) per account through the rate-limit
engine; the answer to a bad login is the same whether the account exists or not.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from gatekeeper.errors import AuthenticationError, PermissionDenied, RateLimitExceeded
from gatekeeper.identity.http import (
    ErrorRoute,
    StrictBody,
    client_address,
    presented_credentials,
)
from gatekeeper.identity.passwords import MAX_PASSWORD_LENGTH
from gatekeeper.identity.principal import Principal
from gatekeeper.identity.service import Identity
from gatekeeper.identity.tiers import DEFAULT_TIER
from gatekeeper.limits.policy import Check

__all__ = ["auth_router"]


_Body = StrictBody


class Credentials(_Body):
    # Lengths are checked generously here and precisely (with a clear message) by the services.
    email: str = Field(max_length=320)
    password: str = Field(max_length=4 * MAX_PASSWORD_LENGTH)
    tier: str | None = Field(default=None, max_length=64)


class LoginBody(_Body):
    email: str = Field(max_length=320)
    password: str = Field(max_length=4 * MAX_PASSWORD_LENGTH)


class RefreshBody(_Body):
    refresh_token: str = Field(max_length=8192)


class NewKeyBody(_Body):
    name: str = Field(default="", max_length=100)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class RotateBody(_Body):
    overlap_seconds: int = Field(default=3600, ge=0, le=30 * 86400)


def auth_router(identity: Identity) -> APIRouter:
    """Routes for registration, login, tokens, API keys and usage."""
    router = APIRouter(route_class=ErrorRoute, tags=["auth"])

    async def throttle(*checks: Check) -> None:
        decision = await identity.limiter.decide(list(checks))
        if not decision.allowed:
            raise RateLimitExceeded(decision)

    async def caller(request: Request) -> Principal:
        bearer, api_key = presented_credentials(request)
        return await identity.authenticate(bearer, api_key)

    async def jwt_user(request: Request) -> Principal:
        principal = await caller(request)
        if principal.via != "jwt":
            raise AuthenticationError("this endpoint needs a user's access token (JWT)")
        return principal

    @router.post("/auth/register", status_code=201)
    async def register(body: Credentials, request: Request) -> dict[str, Any]:
        """Create an account on the free tier and log it in."""
        ip = client_address(request)
        await throttle(Check(identity.register_ip_policy, f"ip:{ip}"))
        if body.tier not in (None, DEFAULT_TIER):
            raise PermissionDenied(
                f"new accounts start on the {DEFAULT_TIER!r} tier; an admin can upgrade them"
            )
        user = await identity.users.register(body.email, body.password)
        pair = await identity.sessions.start(user)
        return {**pair.as_dict(), "user": user.as_dict()}

    @router.post("/auth/login")
    async def login(body: LoginBody, request: Request) -> dict[str, Any]:
        """Exchange email and password for an access and a refresh token."""
        ip = client_address(request)
        account = body.email.strip().lower()[:320]
        await throttle(
            Check(identity.login_ip_policy, f"ip:{ip}"),
            Check(identity.login_account_policy, f"account:{account}"),
        )
        user = await identity.users.authenticate(body.email, body.password)
        return (await identity.sessions.start(user)).as_dict()

    @router.post("/auth/refresh")
    async def refresh(body: RefreshBody) -> dict[str, Any]:
        """Spend a refresh token for a new pair (each refresh token works once)."""
        return (await identity.sessions.refresh(body.refresh_token)).as_dict()

    @router.post("/auth/logout")
    async def logout(request: Request) -> dict[str, Any]:
        """Revoke this session: the access token and every refresh token of its login."""
        bearer, _ = presented_credentials(request)
        if bearer is None:
            raise AuthenticationError("logout needs the access token as Authorization: Bearer")
        _, claims = await identity.sessions.verify_access(bearer)
        await identity.sessions.logout(claims)
        return {"message": "logged out"}

    @router.get("/auth/me")
    async def me(request: Request) -> dict[str, Any]:
        """The caller's account, tier and limits (access token or API key)."""
        principal = await caller(request)
        if principal.via == "admin_token":
            return {"role": "admin", "via": "admin_token"}
        user = await identity.users.get(principal.user_id)
        tier = await identity.tiers.get(user.tier)
        return {**user.as_dict(), "via": principal.via, "limits": tier.policies}

    @router.post("/auth/create_api_key", status_code=201)
    async def create_api_key(body: NewKeyBody, request: Request) -> dict[str, Any]:
        """A new API key; the secret is in this response and nowhere else, ever."""
        principal = await jwt_user(request)
        new = await identity.api_keys.create(
            principal.user_id, body.name, expires_in_days=body.expires_in_days
        )
        return {"api_key": new.secret, **new.info.as_dict()}

    @router.get("/auth/api_keys")
    async def list_keys(request: Request) -> dict[str, Any]:
        """The caller's keys (prefixes and metadata, never secrets)."""
        principal = await jwt_user(request)
        keys = await identity.api_keys.list(principal.user_id)
        return {"keys": [k.as_dict() for k in keys]}

    @router.post("/auth/api_keys/{key_id}/revoke")
    async def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
        """Revoke one of the caller's keys for good."""
        principal = await jwt_user(request)
        info = await identity.api_keys.revoke(key_id, owner=principal.user_id)
        return info.as_dict()

    @router.post("/auth/api_keys/{key_id}/rotate", status_code=201)
    async def rotate_key(key_id: str, body: RotateBody, request: Request) -> dict[str, Any]:
        """A successor key; the old one keeps working for ``overlap_seconds``."""
        principal = await jwt_user(request)
        new = await identity.api_keys.rotate(
            key_id, owner=principal.user_id, overlap_seconds=body.overlap_seconds
        )
        return {"api_key": new.secret, **new.info.as_dict(), "replaces": key_id}

    async def key_principal(request: Request) -> Principal:
        _, api_key = presented_credentials(request)
        bearer, _ = presented_credentials(request)
        principal = await identity.authenticate(bearer, api_key)
        if principal.key_id is None:
            raise AuthenticationError("usage is reported per API key: pass api_key")
        return principal

    @router.get("/usage")
    async def usage(request: Request) -> JSONResponse:
        """The key's tier, its limits with what remains now, and this hour's and day's counts."""
        principal = await key_principal(request)
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
        body = {"key_id": principal.key_id, "tier": principal.tier, "limits": limits, **totals}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @router.get("/usage/history")
    async def usage_history(
        request: Request,
        granularity: str = Query("hour", max_length=8),
        count: int = Query(24, ge=1, le=400),
    ) -> dict[str, Any]:
        """Requests and denials of the key per hour or day, oldest first."""
        principal = await key_principal(request)
        history = await identity.usage.history(principal.subject, granularity, count)
        return {"key_id": principal.key_id, "granularity": granularity, "buckets": history}

    return router
