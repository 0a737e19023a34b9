"""Geographic routing: each request of a geo route goes to the nearest datacenter that can
serve it, as the data-residency rules allow (see docs/geo.md)."""

from gatekeeper.gateway.geo.config import GeoConfig, RouteGeoConfig, geo_config_problems
from gatekeeper.gateway.geo.database import GeoDatabase, Location
from gatekeeper.gateway.geo.distance import haversine_km
from gatekeeper.gateway.geo.locator import LOOKUPS, Locator, Place
from gatekeeper.gateway.geo.policy import GeoPolicy, route_policy
from gatekeeper.gateway.geo.router import Datacenter, GeoRouter, Refusal
from gatekeeper.gateway.geo.stats import GeoStats, geo_stats

__all__ = [
    "LOOKUPS",
    "Datacenter",
    "GeoConfig",
    "GeoDatabase",
    "GeoPolicy",
    "GeoRouter",
    "GeoStats",
    "Location",
    "Locator",
    "Place",
    "Refusal",
    "RouteGeoConfig",
    "geo_config_problems",
    "geo_stats",
    "haversine_km",
    "route_policy",
]
