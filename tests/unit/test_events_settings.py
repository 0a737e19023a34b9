"""The events' settings: the seed's email names, parsed recipients, and what `serve --check`
refuses (a broker URL of an unknown scheme, a bad number), naming the variable."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.events.component import email_options, preflight
from gatekeeper.events.settings import EventSettings
from gatekeeper.settings import Settings


def test_the_seed_email_settings_are_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEKEEPER_SMTP_* / EMAIL_* / ALERT_EMAIL_TO reach the email options."""
    env = {
        "GATEKEEPER_EMAIL_NOTIFICATIONS_ENABLED": "true",
        "GATEKEEPER_SMTP_HOST": "mail.example.com",
        "GATEKEEPER_SMTP_PORT": "465",
        "GATEKEEPER_SMTP_USERNAME": "alerts",
        "GATEKEEPER_SMTP_PASSWORD": "pw",
        "GATEKEEPER_EMAIL_FROM": "gk@example.com",
        "GATEKEEPER_ALERT_EMAIL_TO": "a@example.com, b@example.com",
        "GATEKEEPER_SMTP_USE_TLS": "false",
        "GATEKEEPER_SMTP_USE_SSL": "true",
        "GATEKEEPER_SMTP_TIMEOUT_SECONDS": "7",
        "GATEKEEPER_EMAIL_EVENT_COOLDOWN_SECONDS": "60",
        "GATEKEEPER_EMAIL_RECIPIENTS": '{"key.*": ["sec@example.com"]}',
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = EventSettings()
    assert settings.email_notifications_enabled
    options = email_options(settings)
    assert (options.host, options.port, options.username, options.password) == (
        "mail.example.com",
        465,
        "alerts",
        "pw",
    )
    assert options.to == ("a@example.com", "b@example.com")
    assert options.implicit_tls
    assert not options.starttls
    assert (options.timeout, options.cooldown) == (7.0, 60.0)
    assert options.recipients == {"key.*": ("sec@example.com",)}


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("GATEKEEPER_EVENTS_BROKER_URL", "kafka://h:9092", "unsupported scheme"),
        ("GATEKEEPER_SMTP_PORT", "seventy", "GATEKEEPER_SMTP_PORT"),
        ("GATEKEEPER_EVENTS_MAX_ATTEMPTS", "0", "GATEKEEPER_EVENTS_MAX_ATTEMPTS"),
    ],
)
def test_preflight_refuses_bad_settings_naming_them(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    """What the factory would refuse, `serve --check` refuses first."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=needle):
        preflight(Settings())
