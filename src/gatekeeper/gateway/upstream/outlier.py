"""Passive outlier detection: eject endpoints that keep failing real traffic (Envoy-like).

Every finished request is reported. ``consecutive_failures`` failures in a row (a 5xx answer
or a transport error), or ``consecutive_connect_failures`` transport errors in a row (refused,
reset, timed out), eject the endpoint for ``base_ejection_time x ejections`` (capped at
``max_ejection_time``): an endpoint that keeps coming back broken stays out longer each time.
It returns by itself when the time is up. The multiplier shrinks by one for every
``base_ejection_time`` the endpoint then serves without being ejected again.

Never more than ``max_ejection_percent`` of the pool is ejected at once: when a whole pool
fails, the fault is probably not the endpoints', and ejecting them all would turn a partial
outage into a total one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.upstream.endpoint import Endpoint

__all__ = ["OutlierConfig", "OutlierDetector"]


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    """Thresholds and times of passive outlier detection (``enabled=False`` never ejects)."""

    enabled: bool = True
    consecutive_failures: int = 5
    consecutive_connect_failures: int = 3
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 50.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1 or self.consecutive_connect_failures < 1:
            raise ConfigurationError("outlier consecutive thresholds must be >= 1")
        if self.base_ejection_time <= 0 or self.max_ejection_time < self.base_ejection_time:
            raise ConfigurationError(
                "outlier.base_ejection_time must be > 0 and <= outlier.max_ejection_time"
            )
        if not 0 <= self.max_ejection_percent <= 100:
            raise ConfigurationError("outlier.max_ejection_percent must be in [0, 100]")


class OutlierDetector:
    """Outlier detection over one pool's endpoints."""

    __slots__ = ("config", "endpoints", "refused")

    def __init__(self, endpoints: Sequence[Endpoint], config: OutlierConfig | None = None) -> None:
        self.config = config or OutlierConfig()
        self.endpoints = list(endpoints)
        self.refused = 0  # ejections skipped because of max_ejection_percent

    def record(self, ep: Endpoint, now: float, status: int | None, error: bool) -> bool:
        """Count a finished request; return whether it ejected ``ep``.

        ``status`` is ``None`` for a transport error (nothing came back); ``error`` marks any
        failure. A 5xx status is a failure whatever ``error`` says.
        """
        transport = error and status is None
        failed = transport or error or (status is not None and status >= 500)
        if not failed:
            ep.consecutive_5xx = 0
            ep.consecutive_connect_failures = 0
            if ep.ejections and now >= ep.ejection_decay_at:
                ep.ejections -= 1
                ep.ejection_decay_at = now + self.config.base_ejection_time
            return False
        ep.consecutive_5xx += 1
        if transport:
            ep.consecutive_connect_failures += 1
        else:
            ep.consecutive_connect_failures = 0
        config = self.config
        if not config.enabled or ep.ejected(now):
            return False
        if (
            ep.consecutive_5xx < config.consecutive_failures
            and ep.consecutive_connect_failures < config.consecutive_connect_failures
        ):
            return False
        return self.eject(ep, now)

    def eject(self, ep: Endpoint, now: float) -> bool:
        """Eject ``ep`` unless that would exceed ``max_ejection_percent``."""
        config = self.config
        ejected = sum(1 for e in self.endpoints if e is not ep and e.ejected(now))
        allowed = int(len(self.endpoints) * config.max_ejection_percent / 100.0)
        if ejected + 1 > allowed:
            self.refused += 1
            return False
        ep.ejections += 1
        duration = min(config.base_ejection_time * ep.ejections, config.max_ejection_time)
        ep.ejected_until = now + duration
        ep.ejection_decay_at = ep.ejected_until + config.base_ejection_time
        ep.consecutive_5xx = 0
        ep.consecutive_connect_failures = 0
        return True

    def ejected_count(self, now: float) -> int:
        """How many endpoints are ejected at ``now``."""
        return sum(1 for e in self.endpoints if e.ejected(now))
