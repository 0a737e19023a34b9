"""A route's ``geo:`` compiled once: which datacenters may serve the clients of each region.

Indices follow the configuration's order (``geo.regions``, ``geo.datacenters``), as the router's
do, so that the request path compares booleans in tuples and never names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatekeeper.gateway.geo.config import GeoConfig, RouteGeoConfig

__all__ = ["GeoPolicy", "route_policy"]


@dataclass(frozen=True, slots=True)
class GeoPolicy:
    """A route's geo rules, by index: ``allowed[region][datacenter]`` says whether that
    datacenter may serve clients of that region, ``pinned[region]`` whether residency is
    what restricts them, ``names[region]`` the datacenters allowed (for the refusal)."""

    allowed: tuple[tuple[bool, ...], ...]
    pinned: tuple[bool, ...]
    names: tuple[tuple[str, ...], ...]
    latency_km_per_ms: float = 0.0


def route_policy(spec: RouteGeoConfig | bool, geo: GeoConfig) -> GeoPolicy:
    """The :class:`GeoPolicy` of a route's ``geo:`` (``True``: every datacenter, no residency),
    validated already by the configuration's cross-checks."""
    names = list(geo.datacenters)
    regions = list(geo.regions)
    chosen = set(names)
    rules: list[tuple[set[str], set[str]]] = []
    weight = 0.0
    if not isinstance(spec, bool):
        if spec.datacenters is not None:
            chosen = set(spec.datacenters)
        rules = [(set(rule.from_), set(rule.to)) for rule in spec.residency]
        weight = spec.latency_km_per_ms
    allowed: list[tuple[bool, ...]] = []
    pinned: list[bool] = []
    for region in regions:
        targets = [to for source, to in rules if region in source]
        within = set().union(*targets) if targets else None
        allowed.append(
            tuple(
                name in chosen and (within is None or geo.datacenters[name].region in within)
                for name in names
            )
        )
        pinned.append(within is not None)
    return GeoPolicy(
        allowed=tuple(allowed),
        pinned=tuple(pinned),
        names=tuple(tuple(n for n, ok in zip(names, row, strict=True) if ok) for row in allowed),
        latency_km_per_ms=weight,
    )
