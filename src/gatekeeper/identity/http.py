"""HTTP plumbing shared by the identity, admin and SDK endpoints: the strict request body base,
credentials as presented, and the identity's guards.

The guards (:class:`IdentityGuards`) resolve the caller through the
:class:`~gatekeeper.identity.service.Identity` (admin token, API key or user token) and first
refuse to serve while the database is not migrated (:class:`NotReady`, 503). Errors they raise
are answered through the one problem map (``gatekeeper.problem``): 401 with
``WWW-Authenticate``, 403, 503.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, model_validator

from gatekeeper.endpoints import ADMIN_SCHEME, Call, Guard
from gatekeeper.errors import AuthenticationError, PersistenceError

if TYPE_CHECKING:
    from gatekeeper.identity.principal import Principal
    from gatekeeper.identity.service import Identity

__all__ = [
    "SCHEMES",
    "IdentityGuards",
    "NotReady",
    "StrictBody",
    "identity_guards",
    "presented_credentials",
]

SCHEMES: dict[str, dict[str, Any]] = {
    "adminToken": ADMIN_SCHEME,
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A user's access token (or an API key sent as a bearer token).",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


class NotReady(PersistenceError):
    """The identity layer cannot serve: its database is not migrated (503)."""


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class StrictBody(BaseModel):
    """Base of every request body: unknown fields and NUL characters are refused (422).

    PostgreSQL cannot store NUL in text, and no legitimate name, email or note contains one.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("strings must not contain NUL (\\x00) characters")
        return data


def presented_credentials(call: Call) -> tuple[str | None, str | None]:
    """``(bearer, api_key)`` as presented: ``Authorization: Bearer``, ``X-API-Key``, or the
    seeds' legacy ``api_key`` query parameter."""
    bearer = None
    scheme, _, value = (call.header_text("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        bearer = value.strip()
    api_key = call.header_text("x-api-key") or call.query_value("api_key")
    return bearer, api_key


@dataclass(frozen=True)
class IdentityGuards:
    """The identity's guards: ``ready`` (anyone, once migrated), ``user`` (any credentials),
    ``jwt_user`` (a user's access token), ``key_user`` (an API key), ``admin`` (the admin
    token or a user with the admin role)."""

    ready: Guard
    user: Guard
    jwt_user: Guard
    key_user: Guard
    admin: Guard


_ANY_USER: tuple[dict[str, list[str]], ...] = ({"bearerAuth": []}, {"apiKey": []})
_DENIED = {
    401: "No credentials, or they are wrong, expired or revoked.",
    403: "The key is blocked or its user is disabled.",
}


def identity_guards(identity: Identity, problem: Callable[[], str | None]) -> IdentityGuards:
    """Guards bound to ``identity``; ``problem()`` says why the database cannot serve (None:
    it can)."""

    def ready(call: Call) -> None:
        reason = problem()
        if reason is not None:
            raise NotReady(reason)

    async def user(call: Call) -> Principal:
        ready(call)
        bearer, api_key = presented_credentials(call)
        return await identity.authenticate(bearer, api_key)

    async def jwt_user(call: Call) -> Principal:
        principal = await user(call)
        if principal.via != "jwt":
            raise AuthenticationError("this endpoint needs a user's access token (JWT)")
        return principal

    async def key_user(call: Call) -> Principal:
        principal = await user(call)
        if principal.key_id is None:
            raise AuthenticationError("usage is reported per API key: pass api_key")
        return principal

    async def admin(call: Call) -> Principal:
        ready(call)
        bearer, api_key = presented_credentials(call)
        return await identity.require_admin(bearer, api_key)

    unavailable = {503: "The identity database is unavailable or not migrated."}
    return IdentityGuards(
        ready=Guard("identity_ready", ready, responses=unavailable),
        user=Guard(
            "user",
            user,
            security=_ANY_USER,
            schemes=SCHEMES,
            responses={**_DENIED, **unavailable},
        ),
        jwt_user=Guard(
            "jwt_user",
            jwt_user,
            security=({"bearerAuth": []},),
            schemes=SCHEMES,
            responses={**_DENIED, **unavailable},
        ),
        key_user=Guard(
            "key_user",
            key_user,
            security=_ANY_USER,
            schemes=SCHEMES,
            responses={**_DENIED, **unavailable},
        ),
        admin=Guard(
            "identity_admin",
            admin,
            security=({"adminToken": []}, *_ANY_USER),
            schemes=SCHEMES,
            responses={
                401: "No credentials, or they are wrong.",
                403: "The caller is not an admin.",
                **unavailable,
            },
        ),
    )
