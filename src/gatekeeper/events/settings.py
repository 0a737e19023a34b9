"""The events' process settings (``GATEKEEPER_*``), loaded once at the edge.

Email settings keep the seed's names with the project's prefix (``GATEKEEPER_SMTP_HOST``, ...).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["EventSettings"]


def _addresses(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
    return value


class EventSettings(BaseSettings):
    """Delivery, broker, email and rate-limit spike settings."""

    model_config = SettingsConfigDict(env_prefix="GATEKEEPER_", extra="ignore")

    events_enabled: bool = True
    # amqp://user:pass@host:5672/vhost?exchange=name, or nats://host:4222?stream=NAME; "" none.
    events_broker_url: str = ""
    events_buffer_size: int = Field(default=100_000, ge=100)
    events_flush_interval_seconds: float = Field(default=0.1, gt=0, le=10)
    events_batch_size: int = Field(default=500, ge=1, le=10_000)
    events_max_attempts: int = Field(default=8, ge=1, le=100)
    events_retry_base_seconds: float = Field(default=0.5, gt=0, le=60)
    events_retry_max_seconds: float = Field(default=30.0, gt=0, le=3600)
    events_lease_seconds: float = Field(default=10.0, ge=1, le=300)
    events_redis_prefix: str = "gk"
    events_webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    events_broker_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # ratelimit.spike: more than this many 429s for one key or route within the window.
    ratelimit_spike_threshold: int = Field(default=100, ge=1)
    ratelimit_spike_window_seconds: float = Field(default=60.0, gt=0)
    ratelimit_spike_cooldown_seconds: float = Field(default=300.0, ge=0)

    email_notifications_enabled: bool = False
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    email_from: str = "gatekeeper@localhost"
    alert_email_to: Annotated[list[str], NoDecode] = Field(default_factory=list)
    smtp_use_tls: bool = False
    smtp_use_ssl: bool = False
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    email_event_cooldown_seconds: float = Field(default=300.0, ge=0)
    # JSON: {"key.*": ["security@example.com"], "upstream.down": ["ops@example.com"]}
    email_recipients: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("alert_email_to", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _addresses(value)
