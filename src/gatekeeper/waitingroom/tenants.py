"""A tenant's two identities: its public id (what browsers send) and its secret keys.

The seed had one ``business_id`` per tenant, sent by browsers on every enqueue and poll: public
by design, so it cannot also be what authorizes changing the tenant. Gatekeeper keeps that
value as the tenant's **public id** and gives each tenant **secret keys** for its backend:

    gkwr_3f9a1c2e_<43 random characters>

Like API keys (``identity.api_keys``): the part between the underscores is the key's public
*prefix* (finds the row), the whole key is kept only as a SHA-256 digest (256 random bits:
nothing to brute-force, and it is checked on every backend call) and compared in constant time.
A rotation issues a successor and lets the old key live on for an overlap.

``GATEKEEPER_BUSINESS_IDS`` lists tenants for the embedded and demo modes: ``shop`` (a tenant
without a key: its backend calls need the admin token until one is issued) or ``shop=<secret
key>`` (the operator's key, e.g. from ``gatekeeper tenant-key``); several ``shop=`` entries give
several keys (an overlap while backends are redeployed).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gatekeeper.errors import ConfigurationError, InvalidInput
from gatekeeper.waitingroom.config import TenantConfig

__all__ = [
    "SECRET_PREFIX",
    "TenantKey",
    "TenantRecord",
    "check_tenant_id",
    "digest",
    "is_secret",
    "new_secret",
    "parse_business_ids",
    "parse_secret",
]

SECRET_PREFIX = "gkwr_"
_SECRET = re.compile(r"gkwr_([0-9a-f]{8})_[A-Za-z0-9_-]{43}\Z")
_TENANT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
MAX_OVERLAP = 30 * 86400


def is_secret(value: str) -> bool:
    """Does ``value`` claim to be a secret key? (Public ids never start like one.)"""
    return value.startswith(SECRET_PREFIX)


def parse_secret(raw: str) -> str | None:
    """The prefix of a well-formed secret key, else None."""
    match = _SECRET.match(raw)
    return match.group(1) if match else None


def digest(raw: str) -> str:
    """What is stored of a secret key: its SHA-256, hex."""
    return hashlib.sha256(raw.encode()).hexdigest()


def new_secret() -> str:
    """A fresh secret key (shown once, stored only as :func:`digest`)."""
    return f"{SECRET_PREFIX}{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


def check_tenant_id(value: object) -> str:
    """``value`` if it can be a public id: 1-64 of ``A-Z a-z 0-9 _ . -``, not a key's shape."""
    if not isinstance(value, str) or not _TENANT_ID.match(value) or is_secret(value):
        raise InvalidInput(
            "business_id must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-' "
            f"and must not start with {SECRET_PREFIX!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class TenantKey:
    """One secret key of a tenant, as stored: never the key itself.

    ``origin`` is ``admin`` (issued by the admin API) or ``env`` (listed in
    ``GATEKEEPER_BUSINESS_IDS``; such keys follow that list at every start)."""

    id: str
    tenant: str
    prefix: str
    key_hash: str
    created_at: datetime
    expires_at: datetime | None = None
    origin: str = "admin"
    replaced_by: str | None = None

    def valid_at(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at.timestamp() > now

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.id,
            "prefix": self.prefix,
            "origin": self.origin,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "replaced_by": self.replaced_by,
        }


def key_for(tenant: str, secret: str, now: datetime, *, origin: str = "admin") -> TenantKey:
    """The stored form of ``secret`` (a well-formed key) for ``tenant``."""
    prefix = parse_secret(secret)
    if prefix is None:
        raise ConfigurationError(f"not a tenant secret key (expected {SECRET_PREFIX}<8 hex>_...)")
    return TenantKey(secrets.token_hex(16), tenant, prefix, digest(secret), now, origin=origin)


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """A tenant as the admin sees it: ids, name, switch, settings, keys (never secrets)."""

    business_id: str
    name: str = ""
    enabled: bool = True
    config: TenantConfig = field(default_factory=TenantConfig)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    keys: tuple[TenantKey, ...] = ()

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "business_id": self.business_id,
            "name": self.name,
            "enabled": self.enabled,
            **self.config.model_dump(),
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "keys": [k.as_dict() for k in self.keys if k.valid_at(now)],
        }


def parse_business_ids(
    entries: Iterable[str] | Mapping[str, Sequence[str]],
) -> dict[str, list[str]]:
    """``GATEKEEPER_BUSINESS_IDS`` entries (``shop`` or ``shop=<secret key>``) as
    ``{public id: [secret keys]}``; :class:`ConfigurationError` naming a bad entry."""
    if isinstance(entries, Mapping):
        return {
            check_env_id(t): [check_env_secret(t, s) for s in keys] for t, keys in entries.items()
        }
    tenants: dict[str, list[str]] = {}
    for entry in entries:
        tenant, sep, secret = entry.partition("=")
        keys = tenants.setdefault(check_env_id(tenant.strip()), [])
        if sep:
            keys.append(check_env_secret(tenant, secret.strip()))
    return tenants


def check_env_id(tenant: str) -> str:
    try:
        return check_tenant_id(tenant)
    except InvalidInput as exc:
        raise ConfigurationError(f"GATEKEEPER_BUSINESS_IDS: {tenant!r}: {exc}") from None


def check_env_secret(tenant: str, secret: str) -> str:
    if parse_secret(secret) is None:
        raise ConfigurationError(
            f"GATEKEEPER_BUSINESS_IDS: the key given for {tenant!r} is not a tenant secret key "
            f"({SECRET_PREFIX}<8 hex>_<43 characters>; `gatekeeper tenant-key` prints one)"
        )
    return secret


def utcnow(now: float) -> datetime:
    """Epoch seconds (an injected clock's ``now()``) as an aware UTC datetime."""
    return datetime.fromtimestamp(now, UTC)
