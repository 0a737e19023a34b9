"""Gatekeeper: protects APIs during traffic spikes and abuse."""

from __future__ import annotations

from gatekeeper.errors import (
    ConfigurationError,
    GatekeeperError,
    RateLimitExceeded,
    StorageError,
    StorageTimeout,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "GatekeeperError",
    "RateLimitExceeded",
    "StorageError",
    "StorageTimeout",
    "__version__",
]
