"""Durable state in SQL: the database handle, the tables, and schema migrations."""

from __future__ import annotations

from gatekeeper.persistence.db import Database
from gatekeeper.persistence.migrate import (
    check_migrated,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from gatekeeper.persistence.models import (
    ApiKey,
    AuditEntry,
    Base,
    IpRule,
    RefreshToken,
    Tenant,
    Tier,
    User,
)

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Base",
    "Database",
    "IpRule",
    "RefreshToken",
    "Tenant",
    "Tier",
    "User",
    "check_migrated",
    "current_revision",
    "downgrade",
    "head_revision",
    "upgrade",
]
