"""The audit log: every admin action, who did it, when, and from which address."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from gatekeeper.identity.users import at
from gatekeeper.persistence.db import Database
from gatekeeper.persistence.models import AuditEntry
from gatekeeper.types import Clock

__all__ = ["AuditLog", "AuditRecord"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    ip: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "ip": self.ip,
            "detail": self.detail,
        }


class AuditLog:
    """Appends and reads audit entries (append-only: there is no API to edit or delete)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def record(
        self, actor: str, action: str, target: str = "", ip: str = "", **detail: Any
    ) -> None:
        async with self.db.transaction() as session:
            session.add(
                AuditEntry(
                    at=at(self.clock),
                    actor=actor[:300],
                    action=action[:64],
                    target=target,
                    ip=ip[:64],
                    detail=detail,
                )
            )

    async def list(
        self, *, limit: int = 100, offset: int = 0, action: str | None = None
    ) -> tuple[list[AuditRecord], int]:
        """Newest first."""
        query = select(AuditEntry)
        count = select(func.count()).select_from(AuditEntry)
        if action:
            query = query.where(AuditEntry.action == action)
            count = count.where(AuditEntry.action == action)
        async with self.db.transaction() as session:
            total = await session.scalar(count) or 0
            rows = (
                await session.scalars(
                    query.order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
                )
            ).all()
        records = [
            AuditRecord(r.id, r.at, r.actor, r.action, r.target, r.ip, dict(r.detail)) for r in rows
        ]
        return records, total
