"""The durable tables: tenants, tiers, users, API keys, refresh tokens, IP rules, audit log,
webhook subscriptions.

Every schema change goes through an Alembic migration in ``persistence/migrations/versions``;
these classes describe the head revision. Times are stored in UTC and always come back
timezone-aware (SQLite forgets the zone; :class:`UTCDateTime` puts it back). Defaults that tests
must control (creation and expiry times) are set by the repositories from an injected clock; the
column defaults here only cover rows written by hand or by other components.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Base",
    "IpRule",
    "RefreshToken",
    "Tenant",
    "TenantKey",
    "Tier",
    "UTCDateTime",
    "User",
    "WebhookSubscription",
    "utcnow",
]

# Constraint names that are the same on every engine, so that migrations can drop them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always reads back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a timezone-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The declarative base of every Gatekeeper table."""

    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    """A business of the waiting room (the seed's ``business_id``) and its queue settings."""

    __tablename__ = "tenants"

    business_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    admission_limit: Mapped[int] = mapped_column(Integer, default=10)
    admission_frequency: Mapped[int] = mapped_column(Integer, default=5)
    jwt_expiry_seconds: Mapped[int] = mapped_column(Integer, default=120)
    ready_ttl_seconds: Mapped[int] = mapped_column(Integer, default=300)
    ip_enqueue_limit: Mapped[int] = mapped_column(Integer, default=100)
    ip_enqueue_limit_interval: Mapped[int] = mapped_column(Integer, default=60)
    ip_status_polling_limit: Mapped[int] = mapped_column(Integer, default=60)
    ip_status_polling_limit_interval: Mapped[int] = mapped_column(Integer, default=60)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TenantKey(Base):
    """A tenant's secret key (what its backend sends as ``business_id``). Like an API key:
    only a SHA-256 digest is kept, ``prefix`` finds the row; ``origin`` is ``admin`` (the admin
    API issued it) or ``env`` (``GATEKEEPER_BUSINESS_IDS`` lists it)."""

    __tablename__ = "tenant_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    business_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.business_id", ondelete="CASCADE", onupdate="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(8), default="admin")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set on the old key when it is rotated: the id of its successor.
    replaced_by: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Tier(Base):
    """A service level. ``policies`` is a list of ``{"name", "rate", "algorithm", "burst"}``
    mappings, each becoming a :class:`gatekeeper.limits.Policy` (see ``identity.tiers``)."""

    __tablename__ = "tiers"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    # Higher priority is admitted first by the gateway's admission queue.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    policies: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class User(Base):
    """A person or service account. ``role`` is ``user`` or ``admin``."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    tier: Mapped[str] = mapped_column(ForeignKey("tiers.name", onupdate="CASCADE"), index=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    """An API key. Only a SHA-256 digest of the secret is kept; ``prefix`` (the first
    characters of the key, shown to the owner) finds the row without scanning."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set on the old key when it is rotated: the id of its successor.
    replaced_by: Mapped[str | None] = mapped_column(String(32), nullable=True)


class RefreshToken(Base):
    """One issued refresh token. Rotation marks it ``used_at``; presenting a used one again
    revokes its whole ``family_id`` (every token descended from one login)."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_family", "family_id"),)

    jti: Mapped[str] = mapped_column(String(32), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IpRule(Base):
    """An IP or CIDR on the allow list (never limited nor banned) or the deny list."""

    __tablename__ = "ip_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cidr: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(8))  # "allow" | "deny"
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditEntry(Base):
    """One admin action: who did what to which target, when, from which address."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text, default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebhookSubscription(Base):
    """A webhook subscriber of events: where to POST, which types, and the signing secret
    (kept as is because it must sign; the admin API returns it only when it is created or
    rotated)."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(100))
    # After a rotation the previous secret signs too (a second signature) until this time.
    previous_secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    previous_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
