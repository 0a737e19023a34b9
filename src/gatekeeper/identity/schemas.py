"""The shapes of the identity, admin and SDK answers, for the OpenAPI document.

These models describe what the endpoints send (the services build the dicts); the test suite
checks every answer against them (schemathesis, ``tests/integration/test_openapi_conformance``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ApiKeyOut",
    "AuditPage",
    "Bans",
    "History",
    "IpRuleOut",
    "IpRules",
    "KeyList",
    "LogEntries",
    "Me",
    "Message",
    "NewKey",
    "Registered",
    "RotatedKey",
    "TierOut",
    "Tiers",
    "Tokens",
    "Tracked",
    "Usage",
    "UserDetail",
    "UserOut",
    "UserPage",
    "Verdict",
]


class _Open(BaseModel):
    """An answer that may carry more members than those listed."""

    model_config = ConfigDict(extra="allow")


class UserOut(BaseModel):
    user_id: str
    email: str
    role: str
    tier: str
    disabled: bool
    created_at: str


class Tokens(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    refresh_expires_in: int
    user_id: str
    tier: str


class Registered(Tokens):
    user: UserOut


class Me(_Open):
    role: str
    via: str


class ApiKeyOut(BaseModel):
    key_id: str
    user_id: str
    name: str
    prefix: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    blocked: bool
    replaced_by: str | None


class NewKey(ApiKeyOut):
    api_key: str


class RotatedKey(NewKey):
    replaces: str


class KeyList(BaseModel):
    keys: list[ApiKeyOut]


class Usage(_Open):
    key_id: str
    tier: str
    limits: list[dict[str, Any]]


class History(BaseModel):
    key_id: str
    granularity: str
    buckets: list[dict[str, Any]]


class UserPage(BaseModel):
    users: list[UserOut]
    total: int


class UserDetail(UserOut):
    api_keys: list[ApiKeyOut]


class TierOut(BaseModel):
    name: str
    description: str | None
    priority: int
    policies: list[dict[str, Any]]


class Tiers(BaseModel):
    tiers: list[TierOut]


class Message(_Open):
    message: str


class IpRuleOut(BaseModel):
    id: int
    cidr: str
    action: str
    note: str
    created_at: str
    expires_at: str | None


class IpRules(BaseModel):
    rules: list[IpRuleOut]


class Bans(BaseModel):
    subject: str
    banned: bool
    remaining: float | None = None


class AuditPage(BaseModel):
    entries: list[dict[str, Any]]
    total: int


class LogEntries(BaseModel):
    entries: list[dict[str, Any]]


class Verdict(_Open):
    allowed: bool
    reason: str
    message: str
    retry_after: int | float


class Tracked(BaseModel):
    tracked: bool
