"""Process settings from the environment (``GATEKEEPER_*``), loaded once at the edge.

Secrets and URLs come from here; the declarative YAML file (routes, pools, policies) is loaded by
``gatekeeper.gateway.config``. Everything inward receives these values, never the environment.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gatekeeper.errors import ConfigurationError

__all__ = ["Settings", "from_environment"]

S = TypeVar("S", bound=BaseSettings)


def from_environment(cls: type[S]) -> S:
    """``cls()`` read from the environment. Bad variables raise one ConfigurationError naming
    each variable, one line per problem (``GATEKEEPER_LOG_LEVEL: Input should be ...``)."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = [
            f"{(prefix + '_'.join(str(p) for p in error['loc'])).upper()}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigurationError("\n".join(lines)) from exc


class Settings(BaseSettings):
    """Environment settings. Empty ``redis_url`` means the embedded ``memory://`` store."""

    model_config = SettingsConfigDict(env_prefix="GATEKEEPER_", extra="ignore")

    redis_url: str = ""
    database_url: str = "sqlite+aiosqlite:///gatekeeper.db"
    # Migrate the SQL schema at start-up instead of refusing an outdated one (the demo does).
    auto_migrate: bool = False
    config_file: str | None = None
    admin_token: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    # The seed's BUSINESS_IDS: tenants of the waiting room, "a:b" or "a,b".
    business_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    # How many processes `gatekeeper serve` runs (None: one per core when Redis is set).
    workers: int | None = Field(default=None, ge=1, le=256)
    # Where multiprocess Prometheus metrics are written when several workers run.
    metrics_dir: str | None = None
    # Redis key prefix of the dashboards' live per-second statistics (shared by all replicas).
    live_stats_prefix: str = "gatekeeper:live"
    # The gRPC port of Envoy's rate limit and ext_authz services (overrides the file's
    # envoy.grpc_port; unset in both: no gRPC listener).
    grpc_port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("business_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.replace(",", ":").split(":") if part.strip()]
        return value

    @property
    def storage_url(self) -> str:
        """The limit store's URL: Redis when configured, else the in-process memory store."""
        return self.redis_url or "memory://"
