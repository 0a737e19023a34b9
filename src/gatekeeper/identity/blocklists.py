"""IP and CIDR allow and deny lists.

The most specific matching network wins (``10.0.0.7/32 allow`` beats ``10.0.0.0/8 deny``); at
equal length a deny beats an allow. Allowed addresses skip the anonymous per-IP limit and bans;
denied ones get 403 before anything else happens. The rules are read on every request, so they
are cached whole and invalidated on every replica when one changes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from gatekeeper.errors import InvalidInput, NotFound
from gatekeeper.identity.cache import HotCache
from gatekeeper.identity.users import at
from gatekeeper.persistence.db import Database
from gatekeeper.persistence.models import IpRule
from gatekeeper.types import Clock

__all__ = ["UNKNOWN", "IpRuleInfo", "IpRules", "parse_network"]

UNKNOWN = "unknown"
"""What :meth:`IpRules.match_now` answers when the rules are not in memory."""

_NS = "iprules"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: object) -> Network:
    """``"203.0.113.7"`` or ``"10.0.0.0/8"`` as a network; :class:`InvalidInput` otherwise."""
    if not isinstance(text, str) or len(text) > 64:
        raise InvalidInput("cidr must be an IP address or network like '10.0.0.0/8'")
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise InvalidInput(f"cidr {text!r} is not an IP address or network") from exc


@dataclass(frozen=True, slots=True)
class IpRuleInfo:
    id: int
    cidr: str
    action: str
    note: str
    created_at: datetime
    expires_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cidr": self.cidr,
            "action": self.action,
            "note": self.note,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


def _info(row: IpRule) -> IpRuleInfo:
    return IpRuleInfo(row.id, row.cidr, row.action, row.note, row.created_at, row.expires_at)


class IpRules:
    """Edits the lists and answers "is this address allowed, denied, or neither?"."""

    def __init__(self, db: Database, clock: Clock, cache: HotCache) -> None:
        self.db = db
        self.clock = clock
        self.cache = cache

    async def add(
        self, cidr: str, action: str, *, note: str = "", ttl_seconds: int | None = None
    ) -> IpRuleInfo:
        if action not in ("allow", "deny"):
            raise InvalidInput(f"action must be 'allow' or 'deny'; got {action!r}")
        network = parse_network(cidr)
        if not isinstance(note, str) or len(note) > 200:
            raise InvalidInput("note must be a string of at most 200 characters")
        if ttl_seconds is not None and not 0 < ttl_seconds <= 365 * 86400:
            raise InvalidInput("ttl_seconds must be between 1 and 31536000")
        now = at(self.clock)
        expires = now + timedelta(seconds=ttl_seconds) if ttl_seconds else None
        async with self.db.transaction() as session:
            row = IpRule(
                cidr=str(network), action=action, note=note, created_at=now, expires_at=expires
            )
            session.add(row)
            await session.flush()
            info = _info(row)
        await self.cache.invalidate(_NS)
        return info

    async def remove(self, rule_id: int) -> IpRuleInfo:
        async with self.db.transaction() as session:
            row = await session.get(IpRule, rule_id)
            if row is None:
                raise NotFound(f"IP rule {rule_id} does not exist")
            info = _info(row)
            await session.delete(row)
        await self.cache.invalidate(_NS)
        return info

    async def list_all(self) -> list[IpRuleInfo]:
        async with self.db.transaction() as session:
            rows = (await session.scalars(select(IpRule).order_by(IpRule.id))).all()
        return [_info(r) for r in rows]

    async def _compiled(self) -> list[tuple[Network, str, float | None]]:
        async def load() -> list[tuple[Network, str, float | None]]:
            rules = await self.list_all()
            compiled = [
                (
                    ipaddress.ip_network(r.cidr),
                    r.action,
                    r.expires_at.timestamp() if r.expires_at else None,
                )
                for r in rules
            ]
            # Most specific first; deny before allow at equal length.
            compiled.sort(key=lambda c: (-c[0].prefixlen, c[1] != "deny"))
            return compiled

        return await self.cache.get_or_load(_NS, "all", load)

    async def match(self, ip: str) -> str | None:
        """``"allow"``, ``"deny"`` or ``None`` for ``ip``."""
        return self._match(ip, await self._compiled())

    def match_now(self, ip: str) -> str | None:
        """:meth:`match` without awaiting (the gateway's express lane): :data:`UNKNOWN` when
        the rules are not in memory (the caller takes the awaiting way, which loads them).
        With no rules, as on most gateways, it costs a cache lookup."""
        cached, compiled = self.cache.peek(_NS, "all")
        if not cached:
            return UNKNOWN
        if not compiled:
            return None
        return self._match(ip, compiled)

    def _match(self, ip: str, compiled: list[tuple[Network, str, float | None]]) -> str | None:
        if not compiled:
            return None
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        now = self.clock.now()
        for network, action, expires in compiled:
            if expires is not None and expires <= now:
                continue
            if address.version == network.version and address in network:
                return str(action)
        return None
