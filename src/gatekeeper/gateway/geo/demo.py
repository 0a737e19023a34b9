"""The demo's geolocation database: built at start-up from a small CSV shipped here.

``demo_networks.csv`` is demo data of Gatekeeper's own making, NOT real geolocation: a few
whole address blocks, each sent to one country and one point (see the file's header). It keeps
``gatekeeper demo`` free of downloads; a real deployment names a real database in
``geo.database`` (docs/geo.md says where to get one and under which licence).

:func:`write_database` is the one writer: the demo, the benchmark and the tests' databases all
go through it (``mmdb-writer``, an IPv6 tree with IPv4 at ``::/96`` as MaxMind's own files).
"""

from __future__ import annotations

import csv
import ipaddress
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbF64, MMDBWriter
from netaddr import IPSet

__all__ = ["DEMO_CSV", "build_demo_database", "demo_records", "write_database"]

DEMO_CSV = "demo_networks.csv"

# One row: network, country (ISO 3166-1 alpha-2), continent code, latitude, longitude.
Row = tuple[str, str, str, float | None, float | None]


def demo_records() -> list[Row]:
    """The rows of the demo CSV (comment lines and the header skipped)."""
    text = resources.files(__package__).joinpath(DEMO_CSV).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    rows: list[Row] = []
    for network, country, continent, latitude, longitude in csv.reader(lines[1:]):
        rows.append((network, country, continent, float(latitude), float(longitude)))
    return rows


def _record(country: str, continent: str, latitude: float | None, longitude: float | None) -> Any:
    record: dict[str, Any] = {"country": {"iso_code": country}, "continent": {"code": continent}}
    if latitude is not None and longitude is not None:
        record["location"] = {"latitude": MmdbF64(latitude), "longitude": MmdbF64(longitude)}
    return record


def write_database(
    path: str | os.PathLike[str],
    rows: Iterable[Row],
    *,
    database_type: str = "Gatekeeper-Demo-City",
    description: str = "Gatekeeper demo data: not real geolocation",
) -> Path:
    """Write a MaxMind DB with ``rows`` (City-like records; a row without a position gives a
    Country-like record) to ``path``, atomically (a new file renamed over the old)."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description=description,
    )
    for network, country, continent, latitude, longitude in rows:
        ipaddress.ip_network(network)  # a clear ValueError for a malformed network
        writer.insert_network(IPSet([network]), _record(country, continent, latitude, longitude))
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    writer.to_db_file(str(partial))
    partial.replace(target)
    return target


def build_demo_database(path: str | os.PathLike[str]) -> Path:
    """The demo's database (from ``demo_networks.csv``) written to ``path``."""
    return write_database(path, demo_records())
