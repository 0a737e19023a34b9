"""``/admin/webhooks`` and ``/admin/events/*``: webhook subscriptions and the delivery record.

Every endpoint takes the admin guard (the admin token, or an admin user when the identity
component runs). Changes are written to the audit log (``webhook.create``, ``webhook.update``,
``webhook.delete``, ``webhook.rotate``, ``webhook.test``). A subscription's signing secret is in
the answers of create and rotate only. Nothing here waits for a delivery: a test event goes
through the outbox like every other (its deliveries show up in ``/deliveries``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from gatekeeper.endpoints import (
    Answer,
    Call,
    Endpoint,
    Guard,
    Reply,
    Routes,
    json_reply,
    path,
    problem,
    query,
)
from gatekeeper.events.model import EVENT_TYPES

if TYPE_CHECKING:
    from gatekeeper.events.emitter import BufferedEmitter
    from gatekeeper.events.outbox import Outbox
    from gatekeeper.events.subscriptions import SubscriptionStore

__all__ = ["events_admin_endpoints"]

Audit = Callable[..., Awaitable[None]]
"""``audit(actor, action, target, ip, **detail)`` (``identity.audit.AuditLog.record``)."""

_ID = path("subscription_id", str, max_length=32)
_LIMIT = query("limit", int, default=100, ge=1, le=1000, description="at most this many")
_NOT_FOUND = {404: problem("No such subscription.")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NewSubscriptionBody(_Strict):
    url: str = Field(min_length=1, max_length=2000, description="http(s) URL to POST to")
    event_types: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=64,
        description="Types (key.banned), families (key.*) or * for all.",
    )
    description: str = Field(default="", max_length=200)
    enabled: bool = True


class SubscriptionChange(_Strict):
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=200)
    enabled: bool | None = None


class RotateBody(_Strict):
    overlap_seconds: int = Field(
        default=3600, ge=0, le=7 * 86400, description="how long the previous secret signs too"
    )


class SubscriptionOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    previous_secret_valid_until: str | None
    created_at: str
    updated_at: str


class SubscriptionWithSecret(SubscriptionOut):
    secret: str = Field(description="The signing secret (whsec_...): shown here only.")


class Subscriptions(BaseModel):
    subscriptions: list[SubscriptionOut]


class Records(BaseModel):
    records: list[dict[str, Any]]


class Replayed(BaseModel):
    replayed: int


class Queued(BaseModel):
    event_id: str
    message: str


class Status(BaseModel):
    backlog: int
    buffered: int
    dropped: int
    leader: bool
    delivered: int
    dead_lettered: int
    sinks: list[str]
    event_types: dict[str, str]


def events_admin_endpoints(
    emitter: BufferedEmitter,
    outbox: Outbox,
    status: Callable[[], dict[str, Any]],
    subscriptions: SubscriptionStore | None,
    *,
    guard: Guard,
    audit: Audit | None,
) -> list[Endpoint]:
    """The admin endpoints of the events (webhook ones only with a database)."""
    routes = Routes(tags=("events",), guard=guard)

    async def record(call: Call, action: str, target: str, **detail: Any) -> None:
        if audit is not None:
            actor = str(getattr(call.principal, "actor", call.principal))
            await audit(actor, action, target, call.client_ip, **detail)

    @routes.get("/admin/events", responses={200: Answer("Delivery status.", Status)})
    async def events_status(call: Call) -> Reply:
        """The outbox's backlog, this replica's buffer and leadership, the sinks, the types."""
        body = {
            **status(),
            "backlog": await outbox.backlog(),
            "event_types": {name: t.description for name, t in EVENT_TYPES.items()},
        }
        return json_reply(body)

    @routes.get(
        "/admin/events/deliveries",
        params=(_LIMIT,),
        responses={200: Answer("Recent delivery tries, newest first.", Records)},
    )
    async def deliveries(call: Call) -> Reply:
        """Each recent try of each sink: event id, type, target, attempt, status, error."""
        return json_reply({"records": await outbox.deliveries(call.params["limit"])})

    @routes.get(
        "/admin/events/dead_letters",
        params=(_LIMIT,),
        responses={200: Answer("Dead letters, newest first.", Records)},
    )
    async def dead_letters(call: Call) -> Reply:
        """Events a target never accepted (the whole envelope, the target, the last error)."""
        return json_reply({"records": await outbox.dead_letters(call.params["limit"])})

    @routes.post(
        "/admin/events/dead_letters/replay",
        params=(query("limit", int, default=1000, ge=1, le=10_000, description="at most"),),
        responses={200: Answer("How many were queued again.", Replayed)},
    )
    async def replay_dead_letters(call: Call) -> Reply:
        """Queue the oldest dead letters again (same ids, to every sink: a target that had an
        event gets it once more) once their target is back."""
        replayed = await outbox.replay(call.params["limit"])
        await record(call, "events.replay", "dead_letters", replayed=replayed)
        return json_reply({"replayed": replayed})

    if subscriptions is None:
        return routes.endpoints
    store = subscriptions

    @routes.get("/admin/webhooks", responses={200: Answer("Every subscription.", Subscriptions)})
    async def list_webhooks(call: Call) -> Reply:
        """Every webhook subscription (without secrets)."""
        return json_reply({"subscriptions": await store.list()})

    @routes.post(
        "/admin/webhooks",
        body=NewSubscriptionBody,
        responses={201: Answer("The subscription and its secret.", SubscriptionWithSecret)},
    )
    async def create_webhook(call: Call) -> Reply:
        """Subscribe a URL to event types; the answer holds the signing secret, once."""
        body: NewSubscriptionBody = call.data
        created = await store.create(body.url, body.event_types, body.description, body.enabled)
        await record(call, "webhook.create", created["id"], url=body.url, types=body.event_types)
        return json_reply(created, 201)

    one = {200: Answer("The subscription.", SubscriptionOut), **_NOT_FOUND}

    @routes.get("/admin/webhooks/{subscription_id}", params=(_ID,), responses=one)
    async def get_webhook(call: Call) -> Reply:
        """One subscription (without its secret)."""
        return json_reply(await store.get(call.params["subscription_id"]))

    @routes.patch(
        "/admin/webhooks/{subscription_id}", params=(_ID,), body=SubscriptionChange, responses=one
    )
    async def change_webhook(call: Call) -> Reply:
        """Change the URL, the types, the description or the switch."""
        changes = call.data.model_dump(exclude_none=True)
        subscription_id = call.params["subscription_id"]
        changed = await store.update(subscription_id, dict(changes))
        await record(call, "webhook.update", subscription_id, **changes)
        return json_reply(changed)

    @routes.delete("/admin/webhooks/{subscription_id}", params=(_ID,), responses=one)
    async def delete_webhook(call: Call) -> Reply:
        """Remove a subscription (nothing more is sent to it)."""
        subscription_id = call.params["subscription_id"]
        removed = await store.delete(subscription_id)
        await record(call, "webhook.delete", subscription_id, url=removed["url"])
        return json_reply(removed)

    @routes.post(
        "/admin/webhooks/{subscription_id}/rotate_secret",
        params=(_ID,),
        body=RotateBody,
        body_required=False,
        responses={200: Answer("The new secret.", SubscriptionWithSecret), **_NOT_FOUND},
    )
    async def rotate_webhook(call: Call) -> Reply:
        """A new signing secret, used from the next delivery on and shown here only; the
        previous one signs too (a second signature) for ``overlap_seconds`` (default 1 h)."""
        subscription_id = call.params["subscription_id"]
        overlap = (call.data or RotateBody()).overlap_seconds
        rotated = await store.rotate(subscription_id, overlap)
        await record(call, "webhook.rotate", subscription_id, overlap_seconds=overlap)
        return json_reply(rotated)

    @routes.post(
        "/admin/webhooks/{subscription_id}/test",
        params=(_ID,),
        responses={202: Answer("The test event is queued.", Queued), **_NOT_FOUND},
    )
    async def test_webhook(call: Call) -> Reply:
        """Queue a ``gatekeeper.test`` event for this subscription only (see its deliveries)."""
        subscription_id = call.params["subscription_id"]
        await store.get(subscription_id)  # 404 for an unknown one
        target = f"webhook:{subscription_id}"
        event = emitter.enqueue("test", {"message": "test event", "to": target})
        await record(call, "webhook.test", subscription_id, event_id=event)
        return json_reply({"event_id": event, "message": "queued"}, 202)

    @routes.get(
        "/admin/webhooks/{subscription_id}/deliveries",
        params=(_ID, _LIMIT),
        responses={200: Answer("Its recent delivery tries.", Records), **_NOT_FOUND},
    )
    async def webhook_deliveries(call: Call) -> Reply:
        """The recent delivery tries to this subscription, newest first."""
        subscription_id = call.params["subscription_id"]
        await store.get(subscription_id)
        target = f"webhook:{subscription_id}"
        recent = await outbox.deliveries(1000)
        mine = [r for r in recent if r.get("target") == target][: call.params["limit"]]
        return json_reply({"records": mine})

    return routes.endpoints
