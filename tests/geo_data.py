"""MaxMind-format databases the geo tests build themselves (``mmdb-writer``), with known ranges.

Written here with ``mmdb_writer`` directly (not through the product's demo writer), so that a
mistake in the product's writing cannot hide the same mistake in its reading. The records have
the layout of MaxMind's City databases (``country.iso_code``, ``continent.code``,
``location.latitude/longitude``); :data:`COUNTRY_ONLY` ones have no location, like a Country
database's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbF64, MMDBWriter
from netaddr import IPSet

__all__ = ["CITIES", "COUNTRY_ONLY", "DATACENTERS", "REGIONS", "geo_section", "write_mmdb"]

# network -> (country, continent, latitude, longitude): real cities, made-up assignments.
CITIES: dict[str, tuple[str, str, float, float]] = {
    "81.2.69.0/24": ("GB", "EU", 51.5142, -0.0931),  # London
    "2.16.0.0/13": ("FR", "EU", 48.8566, 2.3522),  # Paris
    "89.160.0.0/16": ("SE", "EU", 59.3294, 18.0686),  # Stockholm
    "216.160.83.0/24": ("US", "NA", 47.6062, -122.3321),  # Seattle
    "12.0.0.0/8": ("US", "NA", 40.7128, -74.0060),  # New York
    "186.30.236.0/24": ("CO", "SA", 4.7110, -74.0721),  # Bogota
    "175.16.199.0/24": ("CN", "AS", 43.8800, 125.3228),  # Changchun
    "202.196.224.0/20": ("PH", "AS", 14.5995, 120.9842),  # Manila
    "10.0.0.0/8": ("DE", "EU", 52.52, 13.405),  # private: must never be looked up
    # IPv6
    "2001:218::/32": ("JP", "AS", 35.6762, 139.6503),  # Tokyo
    "2a02:ff00::/24": ("IT", "EU", 41.9028, 12.4964),  # Rome
    "2600:7000::/24": ("US", "NA", 38.9072, -77.0369),  # Washington
}
# network -> (country, continent): no position, as in a Country database.
COUNTRY_ONLY: dict[str, tuple[str, str]] = {
    "67.43.156.0/24": ("BT", "AS"),  # Bhutan
    "2a02:d300::/28": ("PL", "EU"),  # Poland
}

REGIONS: dict[str, Any] = {
    "us": {"continents": ["NA", "SA"]},
    "eu": {"continents": ["EU", "AF"]},
    "ap": {"continents": ["AS", "OC"]},
}
# name -> (region, latitude, longitude)
DATACENTERS: dict[str, tuple[str, float, float]] = {
    "us-east": ("us", 39.04, -77.49),  # Ashburn
    "eu-west": ("eu", 53.35, -6.26),  # Dublin
    "ap-south": ("ap", 19.08, 72.88),  # Mumbai
}


def write_mmdb(
    path: Path,
    cities: dict[str, tuple[str, str, float, float]] | None = None,
    countries: dict[str, tuple[str, str]] | None = None,
    *,
    ip_version: int = 6,
) -> Path:
    """Write a database with ``cities`` and ``countries`` (defaults: the module's) to
    ``path`` atomically (renamed into place, as geoipupdate does)."""
    writer = MMDBWriter(
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type="Test-City",
        languages=["en"],
        description="gatekeeper tests",
    )
    for network, (country, continent, lat, lon) in (CITIES if cities is None else cities).items():
        if ip_version == 4 and ":" in network:
            continue
        writer.insert_network(
            IPSet([network]),
            {
                "country": {"iso_code": country},
                "continent": {"code": continent},
                "location": {"latitude": MmdbF64(lat), "longitude": MmdbF64(lon)},
            },
        )
    for network, (country, continent) in (COUNTRY_ONLY if countries is None else countries).items():
        if ip_version == 4 and ":" in network:
            continue
        writer.insert_network(
            IPSet([network]), {"country": {"iso_code": country}, "continent": {"code": continent}}
        )
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    writer.to_db_file(str(partial))
    partial.replace(path)
    return path


def geo_section(database: Path, **overrides: Any) -> dict[str, Any]:
    """A ``geo:`` section over the three :data:`DATACENTERS` (pools named like them)."""
    section: dict[str, Any] = {
        "database": str(database),
        "default_region": "us",
        "regions": REGIONS,
        "datacenters": {
            name: {"region": region, "latitude": lat, "longitude": lon, "upstream": name}
            for name, (region, lat, lon) in DATACENTERS.items()
        },
    }
    section.update(overrides)
    return section
