"""What geographic routing did, for ``/geo/stats`` and the dashboard's geo panel.

One :class:`GeoStats` per process, carried from one configuration to the next on reload (the
router of the new snapshot takes the old one's), counted by name: requests by datacenter, by
the client's region and country, how addresses were placed, failovers, refusals, and the last
:data:`DISTANCES` distances between a located client and the datacenter that served it (the
percentiles come from those). Countries are bounded: past :data:`MAX_COUNTRIES` distinct codes
the rest count as ``"other"``.

:func:`geo_stats` is the ``GET /geo/stats`` handler as a plain function over the live router
(``None`` when the configuration has no ``geo:`` section): ``(status, body)``.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["DISTANCES", "MAX_COUNTRIES", "Described", "GeoStats", "geo_stats"]

DISTANCES = 4096  # a power of two: the ring's index is masked
MAX_COUNTRIES = 512
_MASK = DISTANCES - 1
_PERCENTILES = (50, 90, 95, 99)


class GeoStats:
    """Counters of geographic routing (see the module docstring)."""

    __slots__ = (
        "_distances",
        "_next",
        "by_country",
        "by_datacenter",
        "by_region",
        "failovers",
        "failovers_by_datacenter",
        "lookups",
        "refused",
        "requests",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.by_datacenter: dict[str, int] = {}
        self.by_region: dict[str, int] = {}
        self.by_country: dict[str, int] = {}
        self.lookups: dict[str, int] = {}
        self.failovers = 0
        self.failovers_by_datacenter: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self._distances: list[float] = []
        self._next = 0

    def served(
        self, datacenter: str, region: str, country: str, lookup: str, failover: bool
    ) -> None:
        """Count one request sent to ``datacenter`` for a client of ``region``/``country``."""
        self.requests += 1
        by_datacenter = self.by_datacenter
        by_datacenter[datacenter] = by_datacenter.get(datacenter, 0) + 1
        by_region = self.by_region
        by_region[region] = by_region.get(region, 0) + 1
        by_country = self.by_country
        if country not in by_country and len(by_country) >= MAX_COUNTRIES:
            country = "other"
        by_country[country] = by_country.get(country, 0) + 1
        lookups = self.lookups
        lookups[lookup] = lookups.get(lookup, 0) + 1
        if failover:
            self.failovers += 1
            failed = self.failovers_by_datacenter
            failed[datacenter] = failed.get(datacenter, 0) + 1

    def distance(self, km: float) -> None:
        """Remember the distance between a located client and its datacenter."""
        ring = self._distances
        if len(ring) < DISTANCES:
            ring.append(km)
        else:
            ring[self._next & _MASK] = km
        self._next += 1

    def refusal(self, reason: str) -> None:
        """Count a request refused (``residency``, ``no_datacenter``)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def distances(self) -> dict[str, Any]:
        """Percentiles (km, nearest rank) of the last :data:`DISTANCES` distances."""
        values = sorted(self._distances)
        if not values:
            return {"samples": 0}
        out: dict[str, Any] = {"samples": len(values)}
        for p in _PERCENTILES:
            rank = max(0, -(-p * len(values) // 100) - 1)
            out[f"p{p}"] = round(values[rank], 1)
        out["max"] = round(values[-1], 1)
        return out

    def as_dict(self) -> dict[str, Any]:
        """Every counter, as ``/geo/stats`` shows them."""
        return {
            "requests": self.requests,
            "by_datacenter": dict(self.by_datacenter),
            "by_region": dict(self.by_region),
            "by_country": dict(sorted(self.by_country.items(), key=lambda kv: -kv[1])),
            "lookups": dict(self.lookups),
            "unresolved": self.lookups.get("unresolved", 0),
            "failovers": self.failovers,
            "failovers_by_datacenter": dict(self.failovers_by_datacenter),
            "refused": dict(self.refused),
            "distance_km": self.distances(),
        }


class Described(Protocol):
    """What :func:`geo_stats` reads (``router.GeoRouter``)."""

    def describe(self) -> dict[str, Any]:
        """The ``/geo/stats`` body."""
        ...


def geo_stats(router: Described | None) -> tuple[int, dict[str, Any]]:
    """``GET /geo/stats``: the counters, the datacenters as they stand and the database."""
    if router is None:
        return 404, {
            "error": "not_found",
            "detail": "geographic routing is not configured (no geo: section in the file)",
        }
    return 200, router.describe()
