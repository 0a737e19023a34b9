"""The Redis store (in progress)."""

from __future__ import annotations

from typing import Any

from gatekeeper.errors import ConfigurationError
from gatekeeper.types import Clock, Storage

__all__ = ["redis_storage_from_url"]


def redis_storage_from_url(
    url: str, *, prefix: str, clock: Clock | None, query: dict[str, str], **options: Any
) -> Storage:
    """Open a Redis store (not yet available)."""
    raise ConfigurationError(f"storage URL {url!r}: the Redis store is not available yet")
