"""Tiers: named service levels whose policies the rate-limit engine enforces.

A tier's policies are stored as plain mappings (``{"rate": "5/minute"}`` plus optional
``name``, ``algorithm``, ``burst``) and turned into :class:`gatekeeper.limits.Policy` objects
here, validated on every write so that a bad edit is refused (422) instead of breaking requests.
Policy names default to ``tier-<tier>[-<n>]``: a user moved to another tier starts on fresh
counters under the new tier's limits, with no restart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from gatekeeper.errors import ConfigurationError, Conflict, InvalidInput, NotFound
from gatekeeper.identity.cache import HotCache
from gatekeeper.limits.policy import Policy
from gatekeeper.persistence.db import Database
from gatekeeper.persistence.models import Tier, User, utcnow

__all__ = ["DEFAULT_TIER", "TierInfo", "TierService", "build_policies"]

DEFAULT_TIER = "free"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_SPEC_FIELDS = {"name", "rate", "algorithm", "burst"}
_NS = "tier"


def build_policies(tier: str, specs: list[dict[str, Any]]) -> tuple[Policy, ...]:
    """The engine policies of ``tier``; :class:`InvalidInput` naming the bad entry."""
    if not isinstance(specs, list) or not specs:
        raise InvalidInput(f"tier {tier!r}: policies must be a non-empty list")
    if len(specs) > 8:
        raise InvalidInput(f"tier {tier!r}: at most 8 policies")
    policies: list[Policy] = []
    for index, spec in enumerate(specs):
        where = f"tier {tier!r} policy #{index}"
        if not isinstance(spec, dict):
            raise InvalidInput(f"{where}: must be an object like {{'rate': '5/minute'}}")
        unknown = set(spec) - _SPEC_FIELDS
        if unknown:
            raise InvalidInput(f"{where}: unknown fields {sorted(unknown)}")
        default = f"tier-{tier}" if index == 0 else f"tier-{tier}-{index}"
        try:
            policies.append(
                Policy(
                    name=str(spec.get("name") or default),
                    rate=spec.get("rate"),  # type: ignore[arg-type]
                    algorithm=spec.get("algorithm", "token_bucket"),
                    burst=spec.get("burst"),
                )
            )
        except (ConfigurationError, TypeError) as exc:
            raise InvalidInput(f"{where}: {exc}") from exc
    if len({p.name for p in policies}) != len(policies):
        raise InvalidInput(f"tier {tier!r}: policy names must be unique")
    return tuple(policies)


@dataclass(frozen=True, slots=True)
class TierInfo:
    """A tier as the API shows it."""

    name: str
    description: str
    priority: int
    policies: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "priority": self.priority,
            "policies": self.policies,
        }


def _info(row: Tier) -> TierInfo:
    return TierInfo(row.name, row.description, row.priority, list(row.policies))


def check_tier_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            "tier name must be 1-32 lowercase letters, digits, '-' or '_', starting with a "
            f"letter or digit; got {name!r}"
        )
    return name


class TierService:
    """Reads and edits tiers; answers "which policies apply to tier X" from the hot cache."""

    def __init__(self, db: Database, cache: HotCache) -> None:
        self.db = db
        self.cache = cache

    async def list_all(self) -> list[TierInfo]:
        async with self.db.transaction() as session:
            rows = (await session.scalars(select(Tier).order_by(Tier.priority, Tier.name))).all()
        return [_info(r) for r in rows]

    async def get(self, name: str) -> TierInfo:
        async with self.db.transaction() as session:
            row = await session.get(Tier, name)
        if row is None:
            raise NotFound(f"tier {name!r} does not exist")
        return _info(row)

    async def policies(self, name: str) -> tuple[Policy, ...]:
        """The policies of tier ``name`` (cached; invalidated on every replica on change)."""

        async def load() -> tuple[Policy, ...]:
            info = await self.get(name)
            return build_policies(info.name, info.policies)

        return await self.cache.get_or_load(_NS, name, load)

    async def put(
        self,
        name: str,
        policies: list[dict[str, Any]],
        *,
        description: str | None = None,
        priority: int | None = None,
    ) -> tuple[TierInfo, bool]:
        """Create or replace tier ``name``; returns it and whether it was created."""
        check_tier_name(name)
        build_policies(name, policies)  # validate before writing anything
        async with self.db.transaction() as session:
            row = await session.get(Tier, name)
            created = row is None
            if row is None:
                row = Tier(name=name, created_at=utcnow())
                session.add(row)
            row.policies = list(policies)
            if description is not None:
                row.description = description
            elif created:
                row.description = ""
            if priority is not None:
                row.priority = priority
            elif created:
                row.priority = 0
            row.updated_at = utcnow()
            info = _info(row)
        await self.cache.invalidate(_NS, name)
        return info, created

    async def delete(self, name: str) -> None:
        """Remove an unused tier (:class:`Conflict` while users are on it)."""
        async with self.db.transaction() as session:
            row = await session.get(Tier, name)
            if row is None:
                raise NotFound(f"tier {name!r} does not exist")
            users = await session.scalar(select(func.count()).where(User.tier == name))
            if users:
                raise Conflict(f"tier {name!r} still has {users} user(s); move them first")
            await session.delete(row)
        await self.cache.invalidate(_NS, name)
