"""The patterns the detector knows, their rules (threshold within a window) and findings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DISTINCT", "PATTERNS", "Finding", "Rule"]

# Each pattern counts observations of one subject (``ip:<addr>``, ``key:<id>``,
# ``account:<email>``); the distinct ones count different members (paths, keys, networks).
PATTERNS: tuple[str, ...] = (
    "credential_stuffing_ip",  # failed logins from one address
    "credential_stuffing_account",  # failed logins of one account
    "scanning",  # distinct paths answered 401/404 to one address
    "retry_after_ignored",  # requests answered 429 to one key (else address)
    "keys_per_ip",  # distinct API keys used from one address
    "networks_per_key",  # distinct networks (/24, /64) one key is used from
)
DISTINCT = frozenset({"scanning", "keys_per_ip", "networks_per_key"})


@dataclass(frozen=True, slots=True)
class Rule:
    """Flag a subject once ``threshold`` is reached within ``window`` seconds; ``ban`` it
    (addresses and keys only) when set."""

    pattern: str
    threshold: int
    window: float
    ban: bool = False


@dataclass(frozen=True, slots=True)
class Finding:
    """A subject that reached a pattern's threshold (``count`` observed in ``window``)."""

    pattern: str
    subject: str
    count: int
    threshold: int
    window: float

    @property
    def kind(self) -> str:
        """What the subject is: ``ip``, ``key`` or ``account``."""
        return self.subject.partition(":")[0]

    def as_event(self) -> dict[str, Any]:
        """The ``abuse.detected`` event's payload."""
        return {
            "type": self.kind,
            "subject": self.subject,
            "pattern": self.pattern,
            "count": self.count,
            "threshold": self.threshold,
            "window": self.window,
        }
