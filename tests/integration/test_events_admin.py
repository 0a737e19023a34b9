"""/admin/webhooks and /admin/events/* on SQLite and PostgreSQL: the admin guard, the secret
shown only on create and rotate, the audit log, 4xx problems for bad input, and a test event
delivered to a real receiver while the SMTP server is a black hole."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gatekeeper.component import Context
from gatekeeper.endpoints import Dispatcher, asgi_app
from gatekeeper.events.component import EventsComponent
from gatekeeper.events.settings import EventSettings
from gatekeeper.identity.audit import AuditLog
from gatekeeper.persistence import Database
from gatekeeper.settings import Settings
from gatekeeper.types import SystemClock
from tests.integration.events_support import WebhookReceiver, until

TOKEN = "events-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}

CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/admin/events", None),
    ("GET", "/admin/events/deliveries", None),
    ("GET", "/admin/events/dead_letters", None),
    ("POST", "/admin/events/dead_letters/replay", None),
    ("GET", "/admin/webhooks", None),
    ("POST", "/admin/webhooks", {"url": "http://127.0.0.1:1/h"}),
    ("GET", "/admin/webhooks/wh_x", None),
    ("PATCH", "/admin/webhooks/wh_x", {"enabled": False}),
    ("DELETE", "/admin/webhooks/wh_x", None),
    ("POST", "/admin/webhooks/wh_x/rotate_secret", None),
    ("POST", "/admin/webhooks/wh_x/test", None),
    ("GET", "/admin/webhooks/wh_x/deliveries", None),
]


class Api:
    def __init__(self, client: httpx.AsyncClient, component: EventsComponent, db: Database):
        self.client = client
        self.component = component
        self.audit = AuditLog(db, SystemClock())


class _BlackHole:
    """A TCP server that accepts and never says a word (a hung SMTP server)."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> _BlackHole:
        self.server = await asyncio.start_server(self._hang, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await reader.read()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest.fixture
async def api(sql_database: Database) -> AsyncIterator[Api]:
    smtp = await _BlackHole().start()
    settings = EventSettings(
        events_retry_base_seconds=0.05,
        events_retry_max_seconds=0.1,
        events_flush_interval_seconds=0.02,
        email_notifications_enabled=True,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_timeout_seconds=30,
        alert_email_to=["ops@example.com"],
    )
    context = Context(
        settings=Settings(admin_token=SecretStr(TOKEN)),
        clock=SystemClock(),
        database=sql_database,
    )
    component = EventsComponent(context, settings)
    assert context.events is component.emitter
    app = asgi_app(Dispatcher(component.endpoints()))
    await component.start()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gk") as client:
            yield Api(client, component, sql_database)
    finally:
        await component.stop()
        await smtp.stop()


async def test_every_endpoint_needs_the_admin_token(api: Api) -> None:
    """No credentials -> 401, a wrong token -> 403; nothing is created."""
    for method, path, body in CALLS:
        anonymous = await api.client.request(method, path, json=body)
        assert anonymous.status_code == 401, (method, path)
        wrong = await api.client.request(
            method, path, json=body, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 403, (method, path)
    listed = await api.client.get("/admin/webhooks", headers=ADMIN)
    assert listed.json() == {"subscriptions": []}


async def test_the_secret_is_shown_on_create_and_rotate_only_and_changes_are_audited(
    api: Api,
) -> None:
    """create (201, secret) -> get/list without it -> patch -> rotate (new secret) -> delete;
    each change in the audit log with its actor."""
    created = await api.client.post(
        "/admin/webhooks",
        json={"url": "https://hooks.example.com/gk", "event_types": ["key.*", "ip.banned"]},
        headers=ADMIN,
    )
    assert created.status_code == 201
    sub = created.json()
    assert sub["secret"].startswith("whsec_")
    sid = sub["id"]
    got = await api.client.get(f"/admin/webhooks/{sid}", headers=ADMIN)
    assert "secret" not in got.json()
    assert got.json()["event_types"] == ["key.*", "ip.banned"]
    listed = (await api.client.get("/admin/webhooks", headers=ADMIN)).json()["subscriptions"]
    assert [s["id"] for s in listed] == [sid]
    assert "secret" not in listed[0]
    patched = await api.client.patch(
        f"/admin/webhooks/{sid}", json={"enabled": False}, headers=ADMIN
    )
    assert patched.json()["enabled"] is False
    rotated = (await api.client.post(f"/admin/webhooks/{sid}/rotate_secret", headers=ADMIN)).json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != sub["secret"]
    deleted = await api.client.delete(f"/admin/webhooks/{sid}", headers=ADMIN)
    assert deleted.status_code == 200
    gone = await api.client.get(f"/admin/webhooks/{sid}", headers=ADMIN)
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith("application/problem+json")
    records, _ = await api.audit.list()
    assert [r.action for r in reversed(records)] == [
        "webhook.create",
        "webhook.update",
        "webhook.rotate",
        "webhook.delete",
    ]
    assert {r.target for r in records} == {sid}
    assert all(sub["secret"] not in str(r.detail) for r in records)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"url": "ftp://example.com/x"}, "http:// or https://"),
        ({"url": "not a url"}, "http:// or https://"),
        ({"url": "https://u:p@example.com/"}, "credentials"),
        ({"url": "https://example.com/", "event_types": ["key.nope"]}, "unknown event type"),
        ({"url": "https://example.com/", "event_types": []}, "event_types"),
        ({"url": "https://example.com/", "color": "red"}, "color"),
        ({"url": "https://example.com/", "enabled": "yes"}, "enabled"),
        ({}, "url"),
    ],
)
async def test_bad_subscriptions_are_refused_with_a_problem_naming_it(
    api: Api, body: dict[str, Any], needle: str
) -> None:
    """Each bad body -> 422 problem JSON whose text names the problem; nothing is stored."""
    answer = await api.client.post("/admin/webhooks", json=body, headers=ADMIN)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert needle in answer.text
    assert (await api.client.get("/admin/webhooks", headers=ADMIN)).json()["subscriptions"] == []


async def test_malformed_json_and_unknown_ids_are_4xx(api: Api) -> None:
    """A body that is not JSON -> 400; unknown subscription -> 404 on every per-id route."""
    broken = await api.client.post(
        "/admin/webhooks", content=b"{nope", headers={**ADMIN, "content-type": "application/json"}
    )
    assert broken.status_code == 400
    for method, path, body in CALLS:
        if "wh_x" in path:
            answer = await api.client.request(method, path, json=body, headers=ADMIN)
            assert answer.status_code == 404, (method, path, answer.text)


async def test_a_test_event_reaches_the_receiver_while_smtp_hangs(api: Api) -> None:
    """POST .../test answers 202 at once (SMTP is a black hole with a 30 s timeout); the
    receiver gets a validly signed gatekeeper.test with the answered id; its deliveries list
    shows it delivered."""
    receiver = await WebhookReceiver().start()
    try:
        created = await api.client.post(
            "/admin/webhooks", json={"url": receiver.url, "event_types": ["test"]}, headers=ADMIN
        )
        sub = created.json()
        receiver.secret = sub["secret"]
        started = time.monotonic()
        queued = await api.client.post(f"/admin/webhooks/{sub['id']}/test", headers=ADMIN)
        assert queued.status_code == 202
        assert time.monotonic() - started < 2.0
        event_id = queued.json()["event_id"]
        assert await until(lambda: bool(receiver.received), 15)
        assert [r.headers["webhook-id"] for r in receiver.received] == [event_id]
        assert receiver.received[0].valid
        path = f"/admin/webhooks/{sub['id']}/deliveries"
        deliveries = (await api.client.get(path, headers=ADMIN)).json()["records"]
        assert deliveries[0]["event_id"] == event_id
        assert deliveries[0]["status"] == "delivered"
        status = (await api.client.get("/admin/events", headers=ADMIN)).json()
        assert status["sinks"] == ["webhooks", "email"]
        assert "key.banned" in status["event_types"]
    finally:
        await receiver.stop()


async def test_a_hung_smtp_server_slows_neither_requests_admin_calls_nor_webhooks(
    api: Api,
) -> None:
    """With the email sink stuck on the black-hole SMTP server, emitting stays a buffer
    append, admin calls answer at once, and the webhook sink (its own group and lease) still
    delivers the events that follow."""
    receiver = await WebhookReceiver().start()
    try:
        created = await api.client.post(
            "/admin/webhooks", json={"url": receiver.url, "event_types": ["ip.*"]}, headers=ADMIN
        )
        receiver.secret = created.json()["secret"]
        events = api.component.context.events
        assert events is not None
        events.emit("key.banned", {"key_id": "k1", "seconds": 60}, subject="key:k1")
        await asyncio.sleep(0.3)  # flushed; the email sink now waits on SMTP
        for _ in range(200):
            events.emit("ip.banned", {"ip": "10.0.0.1", "seconds": 60})
        await asyncio.sleep(0.2)  # (the webhook sink is now delivering them)
        started = time.monotonic()
        listed = await api.client.get("/admin/webhooks", headers=ADMIN)
        assert time.monotonic() - started < 2.0
        assert listed.status_code == 200
        assert await until(lambda: len(receiver.received) >= 200, 30)
        assert all(r.valid for r in receiver.received)
        assert api.component.sinks[1].name == "email"
        assert api.component.deliverers[1].delivered == 0  # still on the key.banned batch
    finally:
        await receiver.stop()


async def test_stopping_the_embedded_component_delivers_what_was_emitted(
    sql_database: Database,
) -> None:
    """In-process outbox: events emitted just before stop are flushed and delivered by the
    stop itself (they would die with the process otherwise)."""
    receiver = await WebhookReceiver().start()
    context = Context(
        settings=Settings(admin_token=SecretStr(TOKEN)), clock=SystemClock(), database=sql_database
    )
    component = EventsComponent(context, EventSettings(events_flush_interval_seconds=5))
    await component.start()
    try:
        assert component.subscriptions is not None
        created = await component.subscriptions.create(receiver.url, ["*"])
        receiver.secret = created["secret"]
        assert context.events is not None
        for i in range(50):
            context.events.emit("ip.banned", {"ip": f"10.0.0.{i}", "seconds": 60})
        assert receiver.received == []  # (still in the buffer: the flusher waits 5 s)
    finally:
        await component.stop()
        await receiver.stop()
    assert len(receiver.received) == 50
    assert all(r.valid for r in receiver.received)
