"""The ``geo:`` section of ``gatekeeper.yaml`` and the ``geo:`` of a route, validated.

Top level::

    geo:
      database: /var/lib/geoip/GeoLite2-City.mmdb   # any MaxMind DB with country/continent
      default_region: us        # private, loopback and unresolved addresses (default: the
                                # region of the first datacenter)
      cache_size: 65536         # addresses whose answer is remembered
      watch_interval: 5         # seconds between looks at the file's mtime (0: only on reload)
      regions:                  # countries win over continents
        us: {continents: [NA, SA]}
        eu: {continents: [EU, AF], countries: [TR]}
        ap: {continents: [AS, OC]}
      datacenters:
        us-east: {region: us, latitude: 39.04, longitude: -77.49, upstream: us-east}
      headers:                  # null leaves a field out
        datacenter: X-Datacenter            # on the answer
        region: X-Datacenter-Region         # on the answer
        client_region: X-Client-Region      # to the upstream

A route: ``geo: true`` (every datacenter), or::

      geo:
        datacenters: [us-east, eu-west]     # default: every datacenter
        latency_km_per_ms: 0                # each ms of a pool's latency counts as this many km
        residency:                          # clients from these regions stay in those
          - {from: [eu], to: [eu]}

Field checks are pydantic's; :func:`geo_config_problems` checks the names that refer to one
another (regions, datacenters, upstreams), each problem as ``<field.path>: <reason>``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "CONTINENTS",
    "DatacenterConfig",
    "GeoConfig",
    "GeoHeadersConfig",
    "RegionConfig",
    "ResidencyRule",
    "RouteGeoConfig",
    "geo_config_problems",
]

#: The continent codes of MaxMind databases.
CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionConfig(_Model):
    """The countries (ISO 3166-1 alpha-2) and continents whose clients belong to a region."""

    countries: list[str] = []
    continents: list[str] = []

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str]) -> list[str]:
        upper = [c.upper() for c in value]
        for code in upper:
            if not _COUNTRY.match(code):
                raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
        return upper

    @field_validator("continents")
    @classmethod
    def _continents(cls, value: list[str]) -> list[str]:
        upper = [c.upper() for c in value]
        for code in upper:
            if code not in CONTINENTS:
                raise ValueError(f"{code!r} is not a continent code (one of {sorted(CONTINENTS)})")
        return upper


class DatacenterConfig(_Model):
    """Where a datacenter is, which region it serves from, and the pool that is it."""

    region: str
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    upstream: str


class GeoHeadersConfig(_Model):
    """Field names: the datacenter and its region on the answer, the client's region to the
    upstream (``null``: not sent)."""

    datacenter: str | None = "X-Datacenter"
    region: str | None = "X-Datacenter-Region"
    client_region: str | None = "X-Client-Region"

    @field_validator("datacenter", "region", "client_region")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _TOKEN.match(value):
            raise ValueError(f"{value!r} is not a header field name")
        return value


class GeoConfig(_Model):
    """The top-level ``geo:`` section (see the module docstring)."""

    database: str = Field(min_length=1)
    default_region: str | None = None
    cache_size: int = Field(default=65536, ge=2, le=10_000_000)
    watch_interval: float = Field(default=5.0, ge=0)
    regions: dict[str, RegionConfig] = Field(min_length=1)
    datacenters: dict[str, DatacenterConfig] = Field(min_length=1)
    headers: GeoHeadersConfig = Field(default_factory=GeoHeadersConfig)

    @property
    def fallback_region(self) -> str:
        """The region of addresses without a country: ``default_region``, else the first
        datacenter's."""
        return self.default_region or next(iter(self.datacenters.values())).region


class ResidencyRule(_Model):
    """Clients from the regions ``from`` are served only by datacenters in the regions
    ``to`` (503 rather than elsewhere)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: list[str] = Field(alias="from", min_length=1)
    to: list[str] = Field(min_length=1)


class RouteGeoConfig(_Model):
    """A route's ``geo:`` (see the module docstring)."""

    datacenters: list[str] | None = Field(default=None, min_length=1)
    residency: list[ResidencyRule] = []
    latency_km_per_ms: float = Field(default=0.0, ge=0)


def geo_config_problems(data: Any) -> list[str]:
    """The cross-references of the raw file that pydantic cannot see (``geo`` against
    ``upstreams``, routes' ``geo`` against ``geo``), each as ``<field.path>: <reason>``."""
    if not isinstance(data, dict):
        return []
    problems: list[str] = []
    section = data.get("geo")
    geo: dict[str, Any] | None = section if isinstance(section, dict) else None
    regions = _names(geo.get("regions")) if geo else set()
    datacenters: dict[str, Any] = {}
    if geo is not None:
        found = geo.get("datacenters")
        datacenters = found if isinstance(found, dict) else {}
        problems += _geo_section(geo, regions, datacenters, _names(data.get("upstreams")))
    routes = data.get("routes")
    for i, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, dict):
            problems += _route(f"routes.{i}", route, geo, regions, datacenters)
    return problems


def _names(section: Any) -> set[str]:
    return {str(name) for name in section} if isinstance(section, dict) else set()


def _known(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none defined"


def _geo_section(
    geo: dict[str, Any], regions: set[str], datacenters: dict[str, Any], upstreams: set[str]
) -> list[str]:
    problems: list[str] = []
    default = geo.get("default_region")
    if isinstance(default, str) and default not in regions:
        problems.append(
            f"geo.default_region: unknown region {default!r} (known: {_known(regions)})"
        )
    for name, dc in datacenters.items():
        if not isinstance(dc, dict):
            continue
        region, upstream = dc.get("region"), dc.get("upstream")
        if isinstance(region, str) and region not in regions:
            problems.append(
                f"geo.datacenters.{name}.region: unknown region {region!r} "
                f"(known: {_known(regions)})"
            )
        if isinstance(upstream, str) and upstream not in upstreams:
            problems.append(
                f"geo.datacenters.{name}.upstream: unknown upstream {upstream!r} "
                f"(known: {_known(upstreams)})"
            )
    # A country or continent in two regions would make the answer depend on the file's order.
    for field in ("countries", "continents"):
        owner: dict[str, str] = {}
        for region, spec in (geo.get("regions") or {}).items():
            codes = spec.get(field) if isinstance(spec, dict) else None
            for code in codes if isinstance(codes, list) else ():
                key = str(code).upper()
                if key in owner and owner[key] != region:
                    problems.append(
                        f"geo.regions.{region}.{field}: {key!r} is also in region {owner[key]!r}"
                    )
                owner.setdefault(key, str(region))
    return problems


def _route(
    where: str,
    route: dict[str, Any],
    geo: dict[str, Any] | None,
    regions: set[str],
    datacenters: dict[str, Any],
) -> list[str]:
    spec = route.get("geo")
    if spec is None or spec is False:
        if route.get("upstream") is None:
            return [f"{where}.upstream: Field required (or geo: to choose it by location)"]
        return []
    if route.get("upstream") is not None:
        return [f"{where}.geo: a geo route's upstream is its datacenter's: leave upstream out"]
    if geo is None:
        return [f"{where}.geo: the file has no geo: section (database, regions, datacenters)"]
    if not isinstance(spec, dict):
        return []
    problems: list[str] = []
    names = spec.get("datacenters")
    chosen = set(datacenters)
    if isinstance(names, list):
        chosen = {str(n) for n in names}
        for j, name in enumerate(names):
            if name not in datacenters:
                problems.append(
                    f"{where}.geo.datacenters.{j}: unknown datacenter {name!r} "
                    f"(known: {_known(set(datacenters))})"
                )
    served = {
        dc.get("region")
        for name, dc in datacenters.items()
        if name in chosen and isinstance(dc, dict)
    }
    rules = spec.get("residency")
    for j, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        for side in ("from", "to"):
            listed = rule.get(side)
            for k, region in enumerate(listed if isinstance(listed, list) else []):
                if region not in regions:
                    problems.append(
                        f"{where}.geo.residency.{j}.{side}.{k}: unknown region {region!r} "
                        f"(known: {_known(regions)})"
                    )
        to = rule.get("to")
        if isinstance(to, list) and to and not served & set(to):
            problems.append(
                f"{where}.geo.residency.{j}.to: no datacenter of this route is in "
                f"{', '.join(map(str, to))}"
            )
    return problems
