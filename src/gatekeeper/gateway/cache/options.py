"""The cache's settings: a small immutable value object built at the edge from the config."""

from __future__ import annotations

from dataclasses import dataclass

from gatekeeper.errors import ConfigurationError

__all__ = ["CacheOptions"]


@dataclass(frozen=True, slots=True)
class CacheOptions:
    """How the HTTP cache behaves. Every bound is validated on construction."""

    name: str = "gatekeeper"
    """The cache's name in ``Cache-Status``."""
    max_object_bytes: int = 1 * 2**20
    """Bodies larger than this stream through uncached (never buffered past the bound)."""
    coalesce: bool = True
    """Send one upstream fetch for concurrent misses of one URI."""
    coalesce_timeout: float = 5.0
    """How long a coalesced request waits for the leading fetch before fetching itself."""
    validator_grace: float = 300.0
    """Extra seconds stale entries with a validator are kept, to revalidate instead of refetch."""
    honor_request_directives: bool = True
    """Obey clients' ``no-cache`` / ``max-age`` / ``min-fresh`` / ``max-stale``. Turn off to
    keep clients from forcing origin fetches during a spike."""
    max_background_refreshes: int = 64
    """At most this many stale-while-revalidate refreshes run at once (the rest serve stale)."""

    def __post_init__(self) -> None:
        if self.max_object_bytes <= 0:
            raise ConfigurationError("cache.max_object_bytes must be positive")
        if self.coalesce_timeout <= 0:
            raise ConfigurationError("cache.coalesce_timeout must be positive")
        if self.validator_grace < 0:
            raise ConfigurationError("cache.validator_grace must not be negative")
        if self.max_background_refreshes < 0:
            raise ConfigurationError("cache.max_background_refreshes must not be negative")
        if not self.name or any(c in self.name for c in ' ;,="'):
            raise ConfigurationError(f"cache.name {self.name!r}: must be a plain token")
