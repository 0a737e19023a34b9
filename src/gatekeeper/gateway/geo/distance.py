"""Great-circle distance between two points of the Earth (the haversine formula).

The Earth is taken as a sphere of radius 6371.0088 km (the IUGG mean radius): the error
against the ellipsoid is below 0.5 %, far less than an IP address's own uncertainty.
"""

from __future__ import annotations

from math import asin, cos, radians, sin, sqrt

__all__ = ["EARTH_RADIUS_KM", "haversine_km"]

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Kilometres along the surface between two (latitude, longitude) points in degrees."""
    phi1, phi2 = radians(lat1), radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = radians(lon2 - lon1) / 2
    a = sin(half_dphi) ** 2 + cos(phi1) * cos(phi2) * sin(half_dlambda) ** 2
    # min(): rounding can push ``a`` a hair above 1 for antipodal points.
    return 2 * EARTH_RADIUS_KM * asin(min(1.0, sqrt(a)))
