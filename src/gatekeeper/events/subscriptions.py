"""Webhook subscriptions in the SQL database, and the cached list the webhook sink reads.

The delivering leader reads the enabled subscriptions at most every ``cache_seconds`` (a
change made on another replica applies within that time; one made here at once). The signing
secret leaves this module only inside :class:`Subscription` (to sign) and in the answers of
:meth:`SubscriptionStore.create` and :meth:`SubscriptionStore.rotate`.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from gatekeeper.errors import InvalidInput, NotFound
from gatekeeper.events.model import check_patterns
from gatekeeper.events.sinks.webhooks import Subscription, new_secret
from gatekeeper.persistence.db import Database
from gatekeeper.persistence.models import WebhookSubscription
from gatekeeper.types import Clock

__all__ = ["SubscriptionStore", "check_url"]


def check_url(url: str) -> str:
    """An absolute ``http(s)://host...`` URL, else InvalidInput naming the problem."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"url must be an absolute http:// or https:// URL, not {url!r}")
    if parts.username or parts.password:
        raise InvalidInput("url must not carry credentials (the signature authenticates)")
    return url


def _view(row: WebhookSubscription) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "event_types": list(row.event_types),
        "description": row.description,
        "enabled": row.enabled,
        "previous_secret_valid_until": (
            row.previous_until.isoformat() if row.previous_secret and row.previous_until else None
        ),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


class SubscriptionStore:
    """Create, read, change and delete subscriptions; the enabled ones for the sink."""

    def __init__(self, db: Database, clock: Clock, *, cache_seconds: float = 5.0) -> None:
        self.db = db
        self.clock = clock
        self.cache_seconds = cache_seconds
        self._cached: list[Subscription] = []
        self._cached_at: float | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), UTC)

    def _changed(self) -> None:
        self._cached_at = None

    async def active(self) -> list[Subscription]:
        """The enabled subscriptions (cached ``cache_seconds``)."""
        now = self.clock.monotonic()
        if self._cached_at is not None and now - self._cached_at < self.cache_seconds:
            return self._cached
        async with self.db.transaction() as session:
            rows = (
                await session.scalars(
                    select(WebhookSubscription).where(WebhookSubscription.enabled.is_(True))
                )
            ).all()
        now_at = self._now()
        self._cached = [
            Subscription(
                r.id,
                r.url,
                r.secret,
                tuple(r.event_types),
                r.enabled,
                also=(r.previous_secret,)
                if r.previous_secret and r.previous_until and r.previous_until > now_at
                else (),
            )
            for r in rows
        ]
        self._cached_at = now
        return self._cached

    async def create(
        self, url: str, event_types: list[str], description: str = "", enabled: bool = True
    ) -> dict[str, Any]:
        """A new subscription; its answer carries the secret (the only time it is shown)."""
        check_url(url)
        types = check_patterns(event_types)
        secret = new_secret()
        now = self._now()
        row = WebhookSubscription(
            id="wh_" + secrets.token_hex(8),
            url=url,
            secret=secret,
            event_types=list(types),
            description=description,
            enabled=enabled,
            created_at=now,
            updated_at=now,
        )
        async with self.db.transaction() as session:
            session.add(row)
        self._changed()
        return {**_view(row), "secret": secret}

    async def list(self) -> list[dict[str, Any]]:
        async with self.db.transaction() as session:
            rows = (
                await session.scalars(
                    select(WebhookSubscription).order_by(WebhookSubscription.created_at)
                )
            ).all()
        return [_view(r) for r in rows]

    async def get(self, subscription_id: str) -> dict[str, Any]:
        async with self.db.transaction() as session:
            row = await session.get(WebhookSubscription, subscription_id)
            if row is None:
                raise NotFound(f"no webhook subscription {subscription_id!r}")
            return _view(row)

    async def update(self, subscription_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change ``url``, ``event_types``, ``description`` or ``enabled``."""
        if "url" in changes:
            check_url(changes["url"])
        if "event_types" in changes:
            changes["event_types"] = list(check_patterns(changes["event_types"]))
        async with self.db.transaction() as session:
            row = await session.get(WebhookSubscription, subscription_id)
            if row is None:
                raise NotFound(f"no webhook subscription {subscription_id!r}")
            for name, value in changes.items():
                setattr(row, name, value)
            row.updated_at = self._now()
            view = _view(row)
        self._changed()
        return view

    async def rotate(self, subscription_id: str, overlap_seconds: int = 0) -> dict[str, Any]:
        """A new secret, signing from the next delivery on; returned here only. The previous
        one signs too for ``overlap_seconds`` more (a second signature)."""
        secret = new_secret()
        now = self._now()
        async with self.db.transaction() as session:
            row = await session.get(WebhookSubscription, subscription_id)
            if row is None:
                raise NotFound(f"no webhook subscription {subscription_id!r}")
            row.previous_secret = row.secret if overlap_seconds > 0 else None
            row.previous_until = (
                now + timedelta(seconds=overlap_seconds) if overlap_seconds else None
            )
            row.secret = secret
            row.updated_at = now
            view = _view(row)
        self._changed()
        return {**view, "secret": secret}

    async def delete(self, subscription_id: str) -> dict[str, Any]:
        async with self.db.transaction() as session:
            row = await session.get(WebhookSubscription, subscription_id)
            if row is None:
                raise NotFound(f"no webhook subscription {subscription_id!r}")
            view = _view(row)
            await session.delete(row)
        self._changed()
        return view
