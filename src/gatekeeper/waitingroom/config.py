"""What a tenant's waiting room does (:class:`TenantConfig`) and how this process runs it
(:class:`WaitingRoomSettings`).

``TenantConfig`` carries the seed's keys, defaults and bounds; it is persisted in SQL (see
``config_repository``) and edited through ``GET/POST /config``. A partial update is validated
as a whole, so a 422 always names the offending field. ``WaitingRoomSettings`` is process
configuration from the environment (``GATEKEEPER_WAITINGROOM_*``), loaded once at the edge.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CONFIG_KEYS", "TenantConfig", "WaitingRoomSettings"]


class TenantConfig(BaseModel):
    """One tenant's waiting-room settings. Bounds are enforced on every construction.

    Strict: a setting is a JSON integer. ``true``, ``"5"`` and ``5.0`` are refused (422 naming
    the field) instead of being read as 1 or 5: a client that sends them has a bug to learn of.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    admission_limit: int = Field(
        default=10, ge=1, le=100_000, description="Users admitted per tick."
    )
    admission_frequency: int = Field(default=5, ge=1, le=3600, description="Seconds between ticks.")
    jwt_expiry_seconds: int = Field(default=120, ge=60, le=600, description="Queue token lifetime.")
    ready_ttl_seconds: int = Field(default=300, ge=60, le=3600, description="How long ready lasts.")
    ip_enqueue_limit: int = Field(
        default=100, ge=1, le=1_000_000, description="Enqueues per IP window."
    )
    ip_enqueue_limit_interval: int = Field(
        default=60, ge=1, le=86_400, description="Window, seconds."
    )
    ip_status_polling_limit: int = Field(
        default=60, ge=1, le=1_000_000, description="Polls per window."
    )
    ip_status_polling_limit_interval: int = Field(
        default=60, ge=1, le=86_400, description="Seconds."
    )

    def updated(self, changes: dict[str, Any]) -> TenantConfig:
        """A copy with ``changes`` applied and every bound re-checked (raises ValidationError).
        Strict: a boolean is not a number (``{"admission_limit": true}`` is refused, not 1)."""
        return TenantConfig.model_validate({**self.model_dump(), **changes}, strict=True)

    @property
    def admission_rate(self) -> float:
        """Configured admissions per second."""
        return self.admission_limit / self.admission_frequency


CONFIG_KEYS: tuple[str, ...] = tuple(TenantConfig.model_fields)


class WaitingRoomSettings(BaseSettings):
    """Process settings of the waiting room (``GATEKEEPER_WAITINGROOM_*``).

    ``signing``: ``hs256`` uses ``GATEKEEPER_JWT_SECRET`` (every replica must share it);
    ``eddsa`` signs with the Ed25519 private key at ``private_key_file`` and publishes the public
    key at ``/queue/.well-known/jwks.json``. ``grace_seconds``: a queued user who has not polled
    for that long (at most twice that) has abandoned; the server advises polling well inside it.
    """

    model_config = SettingsConfigDict(env_prefix="GATEKEEPER_WAITINGROOM_", extra="ignore")

    signing: Literal["hs256", "eddsa"] = "hs256"
    private_key_file: str | None = None
    key_id: str = "wr-1"
    grace_seconds: int = Field(default=60, ge=2, le=3600)
    poll_min_seconds: float = Field(default=1.0, gt=0, le=60)
    poll_max_seconds: float = Field(default=15.0, gt=0, le=300)
    sse_interval_seconds: float = Field(default=2.0, gt=0, le=60)
    # How long a replica trusts its cached copy of a tenant's config before re-reading SQL.
    config_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    lease_seconds: float = Field(default=5.0, gt=0, le=60)
    # Hosted waiting page: where to send visitors whose return URL is missing or foreign.
    default_return_to: str = "/"
    jwt_secret: SecretStr | None = None
    # Keys live under "<redis_prefix>:wr:{tenant}:..."; tests isolate themselves by prefix.
    redis_prefix: str = "gk"
    # Every call to the Redis store is bounded by this deadline (seconds): a paused or dead
    # Redis answers 503 + Retry-After within it. After `store_breaker_failures` failed calls in
    # a row the store is not called for `store_breaker_cooldown_seconds` (no latency at all).
    store_deadline_seconds: float = Field(default=0.25, gt=0, le=10)
    store_breaker_failures: int = Field(default=3, ge=1, le=1000)
    store_breaker_cooldown_seconds: float = Field(default=1.0, gt=0, le=60)
    # The admission worker's calls (admit, lease): a long sweep is not an outage.
    worker_deadline_seconds: float = Field(default=5.0, gt=0, le=60)
    # Run the admission worker inside serve/demo (the lease keeps it to one replica per tick).
    embedded_worker: bool = True
