"""Email over SMTP (``aiosmtplib``): one message per event, plain text and HTML.

STARTTLS (``smtp_use_tls``) or implicit TLS (``smtp_use_ssl``), optional authentication, a
timeout on every step. Per event type, a cooldown: after a message about a type, further
events of that type are not mailed for ``cooldown`` seconds (they are still delivered to the
other sinks, and recorded here as ``suppressed``). Recipients: per event type when configured,
else the alert list. Runs only on the delivering leader, so a dead or slow SMTP server delays
nothing but this sink's own retries.
"""

from __future__ import annotations

import html
import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from gatekeeper.events.model import EVENT_TYPES, Event, matches, wanted_by
from gatekeeper.events.sinks.base import Attempt
from gatekeeper.types import Clock, SystemClock

__all__ = ["EmailOptions", "EmailSink", "render"]

# What the seed mails about, unless configured otherwise.
DEFAULT_TYPES = (
    "tier.changed",
    "key.*",
    "ip.*",
    "abuse.detected",
    "ratelimit.spike",
    "upstream.down",
    "breaker.opened",
    "limiter.degraded",
    "test",
)


@dataclass(frozen=True, slots=True)
class EmailOptions:
    """SMTP server, sender, recipients and cooldown."""

    host: str = "localhost"
    port: int = 25
    username: str | None = None
    password: str | None = None
    sender: str = "gatekeeper@localhost"
    to: tuple[str, ...] = ()
    # Recipients of particular event types (patterns as in webhook filters), else ``to``.
    recipients: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    event_types: tuple[str, ...] = DEFAULT_TYPES
    starttls: bool = False
    implicit_tls: bool = False
    timeout: float = 10.0
    cooldown: float = 300.0
    tls_context: ssl.SSLContext | None = None


def render(event: Event) -> EmailMessage:
    """The message for ``event`` without envelope addresses: subject, plain text and HTML."""
    kind = EVENT_TYPES.get(event.type)
    title = kind.description if kind else event.type
    about = f" ({event.subject})" if event.subject else ""
    message = EmailMessage()
    message["Subject"] = f"[Gatekeeper] {event.type}{about}"
    message["Message-ID"] = make_msgid(idstring=event.id.replace("-", ""))
    message["X-Gatekeeper-Event-Id"] = event.id
    lines = [title, "", f"type: {event.full_type}", f"id: {event.id}"]
    if event.subject:
        lines.append(f"subject: {event.subject}")
    lines += ["", json.dumps(event.data, indent=2, sort_keys=True, default=str)]
    text = "\n".join(lines) + "\n"
    message.set_content(text)
    rows = "".join(
        f"<tr><th align='left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in sorted(event.data.items())
    )
    message.add_alternative(
        f"<html><body><h2>{html.escape(title)}</h2>"
        f"<p><code>{html.escape(event.full_type)}</code>{html.escape(about)}</p>"
        f"<table>{rows}</table><p><small>event {html.escape(event.id)}</small></p>"
        "</body></html>",
        subtype="html",
    )
    return message


class EmailSink:
    """Mails the events of the configured types, one type per cooldown."""

    name = "email"

    def __init__(self, options: EmailOptions, *, clock: Clock | None = None) -> None:
        self.options = options
        self.clock = clock or SystemClock()
        self._last: dict[str, float] = {}
        self.suppressed = 0

    def _recipients(self, event: Event) -> tuple[str, ...]:
        for pattern, addresses in self.options.recipients.items():
            if matches((pattern,), event.type):
                return addresses
        return self.options.to

    async def plan(self, events: Sequence[Event]) -> list[Attempt]:
        options = self.options
        now = self.clock.monotonic()
        out = []
        for event in events:
            if not matches(options.event_types, event.type) or not wanted_by("email", event):
                continue
            to = self._recipients(event)
            if not to:
                continue
            last = self._last.get(event.type)
            if last is not None and now - last < options.cooldown and event.type != "test":
                self.suppressed += 1
                continue
            self._last[event.type] = now
            out.append(Attempt("email", event, to))
        return out

    async def send(self, attempts: Sequence[Attempt]) -> list[BaseException | None]:
        results: list[BaseException | None] = []
        # One message at a time: SMTP servers throttle parallel sessions, and emails are few.
        for attempt in attempts:
            try:
                await self._send(attempt.event, attempt.detail)
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    async def _send(self, event: Event, to: tuple[str, ...]) -> None:
        options = self.options
        message = render(event)
        message["From"] = options.sender
        message["To"] = ", ".join(to)
        await aiosmtplib.send(
            message,
            hostname=options.host,
            port=options.port,
            username=options.username,
            password=options.password,
            use_tls=options.implicit_tls,
            start_tls=options.starttls if not options.implicit_tls else False,
            timeout=options.timeout,
            tls_context=options.tls_context,
        )

    async def aclose(self) -> None:
        return None
