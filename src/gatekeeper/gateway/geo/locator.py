"""From a client address to a :class:`Place`: its region and the datacenters nearest first.

Looking an address up in the database, finding its region and measuring its distance to every
datacenter happens once per address: the answer is remembered in a bounded cache of two
generations (when the young one is full it becomes the old one and the oldest is dropped; an
address found in the old one moves back to the young one), so that the addresses in use stay
while the cost per request is one dict lookup.

Where an address lands:

- not a global address (private, loopback, link-local, shared, documentation): the default
  region, ``lookup = "private"``;
- not in the database: the default region, ``lookup = "unresolved"``;
- a country or continent the regions list: that region (countries win over continents), else
  the default region; ``lookup = "located"`` with a position, ``"country"`` without one.

A client without a position is placed at its region's first datacenter (the first datacenter
of all when its region has none): the order of failover stays meaningful, and no distance is
reported for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from gatekeeper.gateway.geo.database import GeoDatabase
from gatekeeper.gateway.geo.distance import haversine_km

__all__ = ["LOOKUPS", "Locator", "Place"]

#: The ways an address is placed (a bounded label set for the metrics).
LOOKUPS = ("located", "country", "private", "unresolved")


class Place:
    """Where one address is: its country (``"private"``/``"unknown"`` when none), region
    index, how it was found, the datacenter indices nearest first and the distance to each."""

    __slots__ = ("country", "km", "lookup", "order", "region")

    def __init__(
        self,
        country: str,
        region: int,
        lookup: str,
        order: tuple[int, ...],
        km: tuple[float, ...],
    ) -> None:
        self.country = country
        self.region = region
        self.lookup = lookup
        self.order = order
        self.km = km

    def __repr__(self) -> str:
        return f"Place({self.country}, region={self.region}, {self.lookup}, order={self.order})"


def _nearest(
    latitude: float, longitude: float, sites: Sequence[tuple[float, float]]
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    km = tuple(haversine_km(latitude, longitude, lat, lon) for lat, lon in sites)
    order = tuple(sorted(range(len(sites)), key=km.__getitem__))
    return order, km


class Locator:
    """Places addresses (see the module docstring); ``sites`` are the datacenters' positions
    and ``site_regions`` their region indices, in the configuration's order."""

    __slots__ = (
        "_continent",
        "_country",
        "_fresh",
        "_half",
        "_old",
        "_placed",
        "_private",
        "_unresolved",
        "database",
        "default_region",
        "resolved",
        "sites",
    )

    def __init__(
        self,
        database: GeoDatabase,
        *,
        countries: Mapping[str, int],
        continents: Mapping[str, int],
        default_region: int,
        regions: int,
        sites: Sequence[tuple[float, float]],
        site_regions: Sequence[int],
        cache_size: int = 65536,
    ) -> None:
        self.database = database
        self._country = dict(countries)
        self._continent = dict(continents)
        self.default_region = default_region
        self.sites = tuple(sites)
        self._half = max(1, cache_size // 2)
        self._fresh: dict[str, Place] = {}
        self._old: dict[str, Place] = {}
        self.resolved = 0  # database lookups (cache misses)
        # Per region: the order and distances of a client placed at its first datacenter.
        self._placed: list[tuple[tuple[int, ...], tuple[float, ...]]] = []
        for region in range(regions):
            first = next((i for i, r in enumerate(site_regions) if r == region), 0)
            self._placed.append(_nearest(*self.sites[first], self.sites))
        order, km = self._placed[default_region]
        self._private = Place("private", default_region, "private", order, km)
        self._unresolved = Place("unknown", default_region, "unresolved", order, km)

    def place(self, address: str) -> Place:
        """Where ``address`` is (see the module docstring); cached."""
        found = self._fresh.get(address)
        if found is not None:
            return found
        found = self._old.get(address)
        if found is None:
            found = self._resolve(address)
        fresh = self._fresh
        if len(fresh) >= self._half:
            self._old = fresh
            self._fresh = fresh = {}
        fresh[address] = found
        return found

    def reset(self, database: GeoDatabase | None = None) -> None:
        """Forget every answer (the database changed); ``database`` replaces the open one."""
        if database is not None:
            self.database = database
        self._fresh = {}
        self._old = {}

    @property
    def cached(self) -> int:
        """How many addresses are remembered."""
        return len(self._fresh) + len(self._old)

    def _resolve(self, address: str) -> Place:
        self.resolved += 1
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return self._unresolved
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global:
            return self._private
        found = self.database.lookup(str(ip))
        if found is None or (found.country is None and found.continent is None):
            return self._unresolved
        region = self._country.get(found.country or "")
        if region is None:
            region = self._continent.get(found.continent or "", self.default_region)
        country = found.country or "unknown"
        if found.latitude is None or found.longitude is None:
            order, km = self._placed[region]
            return Place(country, region, "country", order, km)
        order, km = _nearest(found.latitude, found.longitude, self.sites)
        return Place(country, region, "located", order, km)
