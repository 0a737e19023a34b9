"""The ETA a waiting visitor is shown: an expected value, a range, and when to poll next."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from gatekeeper.waitingroom.config import TenantConfig, WaitingRoomSettings
    from gatekeeper.waitingroom.store import QueueStats

__all__ = ["Eta", "estimate", "eta_for", "measured_period"]


class Eta(NamedTuple):
    """Seconds until admission: the expected value and a range; when to poll next."""

    seconds: int
    low: int
    high: int
    poll_after: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "eta_seconds": self.seconds,
            "eta_range_seconds": [self.low, self.high],
            "poll_after_seconds": self.poll_after,
        }


def eta_for(
    position: int,
    stats: QueueStats,
    config: TenantConfig,
    settings: WaitingRoomSettings,
    now: float,
) -> Eta:
    """ETA of ``position`` from the schedule and the measured tick rate.

    The low end assumes every coming tick admits ``admission_limit``; the high end stretches
    the tick period to the one measured over recent ticks (a slow or restarting worker shows
    there) plus a quarter for safety. Abandonment ahead can only make things faster.
    """
    return estimate(position, stats.next_tick, measured_period(stats), config, settings, now)


def measured_period(stats: QueueStats) -> float:
    """The mean tick period over the recorded ticks (0.0 with fewer than two)."""
    history = stats.history
    if len(history) < 2:
        return 0.0
    return (history[-1][0] - history[0][0]) / (len(history) - 1)


def estimate(
    position: int,
    next_tick: float | None,
    measured: float,
    config: TenantConfig,
    settings: WaitingRoomSettings,
    now: float,
) -> Eta:
    """ETA of ``position`` from the next tick's time and a measured tick period."""
    freq = config.admission_frequency
    period = max(float(freq), measured)
    first = freq if next_tick is None else min(freq, max(0.0, next_tick - now))
    ticks = max(0, -(-position // config.admission_limit) - 1)  # ceil, in integers
    low = first + ticks * freq
    high = first + ticks * period * 1.25
    # Poll often near the front, rarely far back, and always well inside the grace period.
    ceiling = min(settings.poll_max_seconds, settings.grace_seconds / 4)
    poll = min(ceiling, max(settings.poll_min_seconds, low / 10))
    return Eta(round((low + high) / 2), math.floor(low), math.ceil(high), round(poll, 1))
