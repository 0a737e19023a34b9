"""The cache's counters, for ``/stats`` and for tests."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CacheStats"]


@dataclass
class CacheStats:
    """Counters for ``/stats`` and ``/metrics``."""

    hits: int = 0
    stale_hits: int = 0
    misses: int = 0
    revalidated: int = 0
    stored: int = 0
    not_stored: int = 0
    collapsed: int = 0
    bypassed: int = 0
    store_errors: int = 0
    background_refreshes: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready snapshot."""
        return {
            "hits": self.hits,
            "stale_hits": self.stale_hits,
            "misses": self.misses,
            "revalidated": self.revalidated,
            "stored": self.stored,
            "not_stored": self.not_stored,
            "collapsed": self.collapsed,
            "bypassed": self.bypassed,
            "store_errors": self.store_errors,
            "background_refreshes": self.background_refreshes,
        }
