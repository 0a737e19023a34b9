"""Webhooks: an HTTP POST of the event's envelope to each subscriber, signed as the Standard
Webhooks specification says.

Headers of every request::

    webhook-id: <the event id>            (the same on every retry: the idempotency key)
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256 over "<id>.<timestamp>.<body>">[ v1,<...>]
    content-type: application/cloudevents+json

The key is the subscription's secret ``whsec_<base64 of 32 random bytes>`` (the HMAC key is
the decoded bytes). During a rotation's overlap the previous secret signs as well (a second
signature in the header), so that a receiver still holding it keeps verifying. A 2xx answer
is a delivery; anything else, a timeout or a refused connection, a failure (retried by the
delivery loop). Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from gatekeeper.events.model import Event, matches, wanted_by
from gatekeeper.events.sinks.base import Attempt

__all__ = [
    "Subscription",
    "WebhookError",
    "WebhookSink",
    "new_secret",
    "sign",
    "verify",
]

SECRET_PREFIX = "whsec_"


class WebhookError(Exception):
    """A subscriber did not accept a delivery (status or transport failure)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """Where and what to send (``event_types``: exact types, ``family.*`` or ``*``)."""

    id: str
    url: str
    secret: str
    event_types: tuple[str, ...] = ("*",)
    enabled: bool = True
    # Secrets that sign too (the previous one, during a rotation's overlap).
    also: tuple[str, ...] = ()

    def wants(self, event: Event) -> bool:
        return (
            self.enabled
            and matches(self.event_types, event.type)
            and wanted_by(f"webhook:{self.id}", event)
        )


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance: float = 300.0) -> bool:
    """What a receiver checks: one of the signatures matches and the timestamp is recent."""
    msg_id = headers.get("webhook-id", "")
    try:
        timestamp = int(headers.get("webhook-timestamp", ""))
    except ValueError:
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = sign(secret, msg_id, timestamp, body).encode()
    offered = headers.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, s.encode()) for s in offered)


class WebhookSink:
    """Posts each event to every enabled subscription that wants it."""

    name = "webhooks"

    def __init__(
        self,
        subscriptions: Callable[[], Awaitable[Sequence[Subscription]]],
        *,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        concurrency: int = 16,
    ) -> None:
        self.subscriptions = subscriptions
        # At most this many POSTs in flight: a batch of 1,000 at once filled the event loop's
        # ready queue, and the requests served by the same loop waited behind it.
        self._slots = asyncio.Semaphore(concurrency)
        self.client = client or httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False
        )

    async def plan(self, events: Sequence[Event]) -> list[Attempt]:
        subs = await self.subscriptions()
        return [
            Attempt(f"webhook:{sub.id}", event, sub)
            for event in events
            for sub in subs
            if sub.wants(event)
        ]

    async def send(self, attempts: Sequence[Attempt]) -> list[BaseException | None]:
        results = await asyncio.gather(
            *(self.post(a.detail, a.event) for a in attempts), return_exceptions=True
        )
        return [r if isinstance(r, BaseException) else None for r in results]

    async def post(self, sub: Subscription, event: Event) -> None:
        """One signed POST; raises :class:`WebhookError` unless the answer is 2xx."""
        async with self._slots:
            await self._post(sub, event)

    async def _post(self, sub: Subscription, event: Event) -> None:
        body = event.to_json()
        timestamp = int(time.time())
        headers = {
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            # One signature per live secret, space-separated (the receiver accepts any).
            "webhook-signature": " ".join(
                sign(secret, event.id, timestamp, body) for secret in (sub.secret, *sub.also)
            ),
            "content-type": "application/cloudevents+json",
            "user-agent": "gatekeeper-webhooks",
        }
        try:
            response = await self.client.post(sub.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise WebhookError(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise WebhookError(f"answered {response.status_code}")

    async def aclose(self) -> None:
        await self.client.aclose()
