"""Email to a real SMTP server (aiosmtpd, in the test): STARTTLS with a certificate of a test
CA and authentication, implicit TLS, a server that refuses, and the per-type cooldown."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from gatekeeper.events.delivery import Deliverer, DeliveryOptions
from gatekeeper.events.model import Event
from gatekeeper.events.outbox import MemoryOutbox
from gatekeeper.events.sinks.email import EmailOptions, EmailSink
from gatekeeper.testing import FakeClock
from tests.servers import free_port

FAST = DeliveryOptions(max_attempts=3, backoff_base=0.01, backoff_max=0.05)
USER, PASSWORD = "alerts", "s3cret-pass"


class Inbox:
    """aiosmtpd handler keeping each message; ``refuse`` answers DATA with a 554."""

    def __init__(self, refuse: bool = False) -> None:
        self.messages: list[tuple[list[str], Message]] = []
        self.refuse = refuse

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return "554 5.7.1 refused by policy"
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting the test CA)."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def _start(handler: Inbox, **kwargs: Any) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


@pytest.fixture
def starttls_server(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = _start(
        inbox,
        tls_context=tls[0],
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticate,
    )
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


async def _deliver(sink: EmailSink, events: list[Event]) -> Deliverer:
    outbox = MemoryOutbox()
    await outbox.append(events)
    deliverer = Deliverer(outbox, [sink], FAST)
    assert await deliverer.run_once(wait=0) == len(events)
    return deliverer


def _options(port: int, client: ssl.SSLContext, **overrides: Any) -> EmailOptions:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "username": USER,
        "password": PASSWORD,
        "sender": "gatekeeper@example.com",
        "to": ("ops@example.com",),
        "starttls": True,
        "timeout": 5.0,
        "tls_context": client,
    }
    values.update(overrides)
    return EmailOptions(**values)


async def test_starttls_and_auth_deliver_a_plain_text_and_html_message(
    starttls_server: tuple[Inbox, int], tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Over STARTTLS, authenticated: one message with both parts naming the event."""
    inbox, port = starttls_server
    event = Event("key.banned", {"key_id": "k1", "seconds": 600}, 1.7e9, "t", "key:k1")
    await _deliver(EmailSink(_options(port, tls[1])), [event])
    assert len(inbox.messages) == 1
    rcpt, message = inbox.messages[0]
    assert rcpt == ["ops@example.com"]
    assert message["Subject"] == "[Gatekeeper] key.banned (key:k1)"
    assert message["X-Gatekeeper-Event-Id"] == event.id
    kinds = [part.get_content_type() for part in message.walk()]
    assert "text/plain" in kinds
    assert "text/html" in kinds


async def test_wrong_password_fails_and_is_dead_lettered(
    starttls_server: tuple[Inbox, int], tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Authentication refused: every try fails, the event ends in the dead letters."""
    inbox, port = starttls_server
    sink = EmailSink(_options(port, tls[1], password="wrong"))
    deliverer = await _deliver(sink, [Event("ip.banned", {"ip": "10.1.1.1"}, 1.7e9, "t")])
    assert inbox.messages == []
    dead = await deliverer.outbox.dead_letters(5)
    assert dead[0]["target"] == "email"
    assert dead[0]["attempts"] == FAST.max_attempts


async def test_implicit_tls_delivers(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """SMTP over implicit TLS (GATEKEEPER_SMTP_USE_SSL)."""
    inbox = Inbox()
    controller = _start(inbox, ssl_context=tls[0], auth_require_tls=False)
    try:
        options = _options(
            controller.port, tls[1], starttls=False, implicit_tls=True, username=None
        )
        await _deliver(EmailSink(options), [Event("upstream.down", {}, 1.7e9, "t")])
    finally:
        controller.stop()
    assert len(inbox.messages) == 1


async def test_a_refusing_server_and_a_closed_port_fail_without_raising(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """554 on DATA, and nobody listening: each try is a recorded failure, then a dead letter."""
    inbox = Inbox(refuse=True)
    controller = _start(inbox, auth_require_tls=False)
    try:
        refusing = EmailSink(_options(controller.port, tls[1], starttls=False, username=None))
        deliverer = await _deliver(refusing, [Event("abuse.detected", {}, 1.7e9, "t")])
    finally:
        controller.stop()
    assert "refused by policy" in (await deliverer.outbox.dead_letters(1))[0]["error"]
    closed = EmailSink(_options(free_port(), tls[1], starttls=False, username=None))
    deliverer = await _deliver(closed, [Event("abuse.detected", {}, 1.7e9, "t")])
    records = await deliverer.outbox.deliveries(10)
    assert [r["status"] for r in records] == ["failed"] * FAST.max_attempts


async def test_cooldown_mails_one_event_per_type_and_routes_recipients_by_type(
    starttls_server: tuple[Inbox, int], tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Within the cooldown a second event of a type is not mailed; after it, it is. A type
    with its own recipients goes to them; an unlisted type (breaker.closed) is not mailed."""
    inbox, port = starttls_server
    clock = FakeClock()
    options = _options(port, tls[1], cooldown=60.0, recipients={"key.*": ("security@example.com",)})
    sink = EmailSink(options, clock=clock)
    first = [
        Event("ip.banned", {"n": 1}, 1.7e9, "t"),
        Event("ip.banned", {"n": 2}, 1.7e9, "t"),
        Event("key.blocked", {}, 1.7e9, "t"),
        Event("breaker.closed", {}, 1.7e9, "t"),
    ]
    await _deliver(sink, first)
    assert [m["Subject"] for _, m in inbox.messages] == [
        "[Gatekeeper] ip.banned",
        "[Gatekeeper] key.blocked",
    ]
    assert inbox.messages[1][0] == ["security@example.com"]
    assert sink.suppressed == 1
    clock.advance(61)
    await _deliver(sink, [Event("ip.banned", {"n": 3}, 1.7e9, "t")])
    assert len(inbox.messages) == 3
