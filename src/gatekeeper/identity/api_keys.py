"""API keys: shown once, stored hashed, found by prefix, expirable, revocable, rotatable.

A key looks like ``gk_3f9a1c2e_<43 random characters>``. The part between the underscores is
its public *prefix*: stored in clear, unique, shown in listings and used to find the row. The
whole key is stored only as a SHA-256 digest. SHA-256 rather than argon2 because the key carries
256 random bits (nothing to brute-force) and because it is checked on every request.

Rotation issues a successor and lets the old key live on for an overlap period, so that clients
can be redeployed without a moment where neither key works.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from gatekeeper.errors import AuthenticationError, Conflict, InvalidInput, NotFound
from gatekeeper.errors import PermissionDenied as Forbidden
from gatekeeper.identity.cache import HotCache
from gatekeeper.identity.principal import Principal
from gatekeeper.identity.users import at
from gatekeeper.persistence.db import Database
from gatekeeper.persistence.models import ApiKey, User
from gatekeeper.types import Clock

__all__ = ["ApiKeyInfo", "ApiKeyService", "NewApiKey", "parse_key"]

_KEY = re.compile(r"^gk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_NS = "apikey"
MAX_NAME = 100
MAX_LIFETIME_DAYS = 3650


def parse_key(raw: object) -> str | None:
    """The prefix of a well-formed key, else ``None``."""
    if not isinstance(raw, str):
        return None
    match = _KEY.match(raw)
    return match.group(1) if match else None


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """A key's metadata as its owner and admins see it (never the secret)."""

    id: str
    user_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    blocked: bool
    replaced_by: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.id,
            "user_id": self.user_id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "blocked": self.blocked,
            "replaced_by": self.replaced_by,
        }


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A freshly created key: ``secret`` is shown this once and never again."""

    secret: str
    info: ApiKeyInfo


@dataclass(frozen=True, slots=True)
class _Resolved:
    """What the hot path caches per prefix: enough to decide without SQL."""

    key_hash: str
    key_id: str
    expires_at: float | None
    revoked: bool
    blocked: bool
    user_disabled: bool
    principal: Principal


def _info(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        row.id,
        row.user_id,
        row.name,
        row.prefix,
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.blocked,
        row.replaced_by,
    )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise InvalidInput(f"key name must be a string of at most {MAX_NAME} characters")
    return name


class ApiKeyService:
    """Creates, resolves and manages API keys."""

    def __init__(self, db: Database, clock: Clock, cache: HotCache) -> None:
        self.db = db
        self.clock = clock
        self.cache = cache

    async def create(
        self, user_id: str, name: str = "", *, expires_in_days: float | None = None
    ) -> NewApiKey:
        """A new key for ``user_id``; the returned secret is not stored anywhere."""
        _check_name(name)
        now = at(self.clock)
        expires_at = None
        if expires_in_days is not None:
            if not 0 < expires_in_days <= MAX_LIFETIME_DAYS:
                raise InvalidInput(
                    f"expires_in_days must be between 0 and {MAX_LIFETIME_DAYS}; "
                    f"got {expires_in_days!r}"
                )
            expires_at = now + timedelta(days=expires_in_days)
        for _ in range(5):  # prefixes are 32 random bits: a collision is rare, retry it
            prefix = secrets.token_hex(4)
            secret = f"gk_{prefix}_{secrets.token_urlsafe(32)}"
            row = ApiKey(
                id=uuid.uuid4().hex,
                user_id=user_id,
                name=name,
                prefix=prefix,
                key_hash=_digest(secret),
                created_at=now,
                expires_at=expires_at,
                blocked=False,
            )
            try:
                async with self.db.transaction() as session:
                    if await session.get(User, user_id) is None:
                        raise NotFound(f"user {user_id!r} does not exist")
                    session.add(row)
            except Conflict:
                continue
            return NewApiKey(secret, _info(row))
        raise Conflict("could not allocate a unique key prefix; try again")

    async def resolve(self, raw: str) -> Principal:
        """The principal behind a presented key.

        :class:`AuthenticationError` for unknown, malformed, revoked and expired keys (401),
        :class:`PermissionDenied` for blocked keys and disabled users (403).
        """
        prefix = parse_key(raw)
        if prefix is None:
            raise AuthenticationError("API key is malformed or unknown")

        async def load() -> _Resolved | None:
            async with self.db.transaction() as session:
                found = (
                    await session.execute(
                        select(ApiKey, User)
                        .join(User, User.id == ApiKey.user_id)
                        .where(ApiKey.prefix == prefix)
                    )
                ).first()
            if found is None:
                return None
            key, user = found
            return _Resolved(
                key_hash=key.key_hash,
                key_id=key.id,
                expires_at=key.expires_at.timestamp() if key.expires_at else None,
                revoked=key.revoked_at is not None,
                blocked=key.blocked,
                user_disabled=user.disabled,
                principal=Principal(
                    user_id=user.id,
                    email=user.email,
                    role=user.role,
                    tier=user.tier,
                    via="api_key",
                    key_id=key.id,
                ),
            )

        resolved = await self.cache.get_or_load(_NS, prefix, load)
        if resolved is None or not hmac.compare_digest(resolved.key_hash, _digest(raw)):
            raise AuthenticationError("API key is malformed or unknown")
        if resolved.revoked:
            raise AuthenticationError("API key has been revoked")
        if resolved.expires_at is not None and resolved.expires_at <= self.clock.now():
            raise AuthenticationError("API key has expired")
        if resolved.blocked:
            raise Forbidden("API key is blocked")
        if resolved.user_disabled:
            raise Forbidden("the key's user is disabled")
        return resolved.principal

    async def list(self, user_id: str | None = None) -> list[ApiKeyInfo]:
        """Keys of one user (or all), newest first."""
        query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
        if user_id is not None:
            query = query.where(ApiKey.user_id == user_id)
        async with self.db.transaction() as session:
            rows = (await session.scalars(query)).all()
        return [_info(r) for r in rows]

    async def get(self, key_id: str, *, owner: str | None = None) -> ApiKeyInfo:
        async with self.db.transaction() as session:
            row = await session.get(ApiKey, key_id)
        if row is None or (owner is not None and row.user_id != owner):
            raise NotFound(f"API key {key_id!r} does not exist")
        return _info(row)

    async def find(self, raw_or_prefix: str) -> ApiKeyInfo:
        """The key named by its full secret or its public prefix."""
        prefix = parse_key(raw_or_prefix) or raw_or_prefix
        async with self.db.transaction() as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        if row is None or (
            prefix != raw_or_prefix
            and not hmac.compare_digest(row.key_hash, _digest(raw_or_prefix))
        ):
            raise NotFound("no such API key")
        return _info(row)

    async def _change(self, key_id: str, owner: str | None, **values: Any) -> ApiKeyInfo:
        async with self.db.transaction() as session:
            row = await session.get(ApiKey, key_id)
            if row is None or (owner is not None and row.user_id != owner):
                raise NotFound(f"API key {key_id!r} does not exist")
            for name, value in values.items():
                setattr(row, name, value)
            info = _info(row)
        await self.cache.invalidate(_NS, info.prefix)
        return info

    async def revoke(self, key_id: str, *, owner: str | None = None) -> ApiKeyInfo:
        """Revoke for good (401 from now on, on every replica)."""
        return await self._change(key_id, owner, revoked_at=at(self.clock))

    async def set_blocked(self, key_id: str, blocked: bool) -> ApiKeyInfo:
        """Block (403) or unblock a key: an admin lever, reversible."""
        return await self._change(key_id, None, blocked=blocked)

    async def rotate(
        self, key_id: str, *, owner: str | None = None, overlap_seconds: int = 3600
    ) -> NewApiKey:
        """A successor key; the old one keeps working for ``overlap_seconds`` more."""
        if not 0 <= overlap_seconds <= 30 * 86400:
            raise InvalidInput("overlap_seconds must be between 0 and 2592000 (30 days)")
        old = await self.get(key_id, owner=owner)
        if old.revoked_at is not None:
            raise Conflict("a revoked key cannot be rotated")
        remaining = None
        if old.expires_at is not None:
            remaining = (old.expires_at - at(self.clock)).total_seconds() / 86400
            if remaining <= 0:
                raise Conflict("an expired key cannot be rotated")
        new = await self.create(old.user_id, old.name, expires_in_days=remaining)
        end = at(self.clock) + timedelta(seconds=overlap_seconds)
        if old.expires_at is not None and old.expires_at < end:
            end = old.expires_at
        await self._change(key_id, owner, expires_at=end, replaced_by=new.info.id)
        return new
