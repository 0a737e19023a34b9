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
    """Counters of geographic routing (see the module docstring).

    A request costs one dict update: counts are kept per (datacenter, region, country, lookup,
    failover) and summed when read.
    """

    __slots__ = ("_countries", "_counts", "_distances", "_next", "refused")

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str, str, bool], int] = {}
        self._countries: set[str] = set()
        self.refused: dict[str, int] = {}
        self._distances: list[float] = []
        self._next = 0

    def served(
        self, datacenter: str, region: str, country: str, lookup: str, failover: bool
    ) -> None:
        """Count one request sent to ``datacenter`` for a client of ``region``/``country``."""
        counts = self._counts
        key = (datacenter, region, country, lookup, failover)
        n = counts.get(key)
        if n is None:  # a new combination: the only time countries are bounded
            countries = self._countries
            if country not in countries:
                if len(countries) >= MAX_COUNTRIES:
                    key = (datacenter, region, "other", lookup, failover)
                else:
                    countries.add(country)
            n = counts.get(key, 0)
        counts[key] = n + 1

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

    def _sum(self, field: int, *, failovers: bool = False) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, n in self._counts.items():
            if failovers and not key[4]:
                continue
            name = str(key[field])
            out[name] = out.get(name, 0) + n
        return out

    @property
    def requests(self) -> int:
        """Requests routed."""
        return sum(self._counts.values())

    @property
    def by_datacenter(self) -> dict[str, int]:
        """Requests by the datacenter that served them."""
        return self._sum(0)

    @property
    def by_region(self) -> dict[str, int]:
        """Requests by the client's region."""
        return self._sum(1)

    @property
    def by_country(self) -> dict[str, int]:
        """Requests by the client's country (``private``, ``unknown``, ``other``), most first."""
        return dict(sorted(self._sum(2).items(), key=lambda kv: -kv[1]))

    @property
    def lookups(self) -> dict[str, int]:
        """Requests by how their client was placed (located, country, private, unresolved)."""
        return self._sum(3)

    @property
    def failovers(self) -> int:
        """Requests whose nearest allowed datacenter could not serve them."""
        return sum(n for key, n in self._counts.items() if key[4])

    @property
    def failovers_by_datacenter(self) -> dict[str, int]:
        """Failovers by the datacenter that served them instead."""
        return self._sum(0, failovers=True)

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
        lookups = self.lookups
        return {
            "requests": self.requests,
            "by_datacenter": self.by_datacenter,
            "by_region": self.by_region,
            "by_country": self.by_country,
            "lookups": lookups,
            "unresolved": lookups.get("unresolved", 0),
            "failovers": self.failovers,
            "failovers_by_datacenter": self.failovers_by_datacenter,
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
