"""The operator's MaxMind DB file: opened, read, and reopened when it is replaced.

Any MaxMind DB whose records have the GeoIP2/GeoLite2 layout serves: a City database gives
the country, the continent and a position; a Country database gives no position (the client is
then placed at its region's first datacenter, see :mod:`.locator`). Other vendors' files in the
same layout (DB-IP's lite databases, for one) serve as well.

The file is memory-mapped (``maxminddb``'s C reader when available). Replace it the way MaxMind's
``geoipupdate`` does, writing a new file and renaming it over the old one: a file rewritten in
place under a mapping can be read half old, half new. :meth:`GeoDatabase.changed` compares the
file's inode, size and modification time (one ``stat``, done by the router's watcher every few
seconds, never per request).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb
from maxminddb.errors import InvalidDatabaseError

from gatekeeper.errors import ConfigurationError

__all__ = ["GeoDatabase", "Location"]

logger = logging.getLogger("gatekeeper.gateway.geo")

Stamp = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Location:
    """What the database says of one address; any part may be missing."""

    country: str | None
    continent: str | None
    latitude: float | None
    longitude: float | None


def _stamp(path: Path) -> Stamp:
    info = path.stat()
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _open(path: Path) -> tuple[Any, Stamp]:
    """A reader on ``path`` and the file's stamp; ConfigurationError naming the file."""
    try:
        stamp = _stamp(path)
        reader = maxminddb.open_database(str(path))
    except FileNotFoundError:
        raise ConfigurationError(f"geo.database: {str(path)!r} does not exist") from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigurationError(f"geo.database: cannot read {str(path)!r}: {reason}") from exc
    except (InvalidDatabaseError, ValueError) as exc:
        raise ConfigurationError(
            f"geo.database: {str(path)!r} is not a MaxMind DB file ({exc})"
        ) from exc
    return reader, stamp


def _location(record: Any) -> Location | None:
    if not isinstance(record, dict):
        return None
    country = record.get("country") or record.get("registered_country") or {}
    continent = record.get("continent") or {}
    position = record.get("location") or {}
    latitude = position.get("latitude")
    longitude = position.get("longitude")
    if not isinstance(latitude, (int, float)) or not isinstance(longitude, (int, float)):
        latitude = longitude = None
    code = country.get("iso_code")
    return Location(
        code.upper() if isinstance(code, str) else None,
        continent.get("code") if isinstance(continent.get("code"), str) else None,
        float(latitude) if latitude is not None else None,
        float(longitude) if longitude is not None else None,
    )


class GeoDatabase:
    """One open MaxMind DB file (:meth:`open` refuses a missing or corrupt one)."""

    __slots__ = ("last_error", "loaded_at", "path", "reader", "reloads", "stamp")

    def __init__(self, path: Path, reader: Any, stamp: Stamp) -> None:
        self.path = path
        self.reader = reader
        self.stamp = stamp
        self.loaded_at = dt.datetime.now(dt.UTC)
        self.reloads = 0
        self.last_error = ""

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> GeoDatabase:
        """Open ``path``; raises ConfigurationError naming it when it cannot serve."""
        file = Path(path)
        reader, stamp = _open(file)
        return cls(file, reader, stamp)

    def lookup(self, address: str) -> Location | None:
        """The database's answer for ``address``; ``None`` when it has none (or the address
        is not one it can look up, e.g. IPv6 in an IPv4-only file)."""
        try:
            record = self.reader.get(address)
        except (ValueError, InvalidDatabaseError):
            return None
        return _location(record)

    def changed(self) -> bool:
        """Whether the file on disk is not the one open (replaced, touched, or gone)."""
        try:
            return _stamp(self.path) != self.stamp
        except OSError:
            return False  # gone for now (being replaced): keep serving the open one

    def reopen(self) -> bool:
        """Open the file again; False (the open one kept, the error logged once) when the
        new file cannot serve."""
        try:
            reader, stamp = _open(self.path)
        except ConfigurationError as exc:
            try:
                self.stamp = _stamp(self.path)  # not retried until the file changes again
            except OSError:
                pass
            self.last_error = str(exc)
            logger.error("geo database not reloaded, the previous one stays: %s", exc)
            return False
        old, self.reader, self.stamp = self.reader, reader, stamp
        old.close()
        self.loaded_at = dt.datetime.now(dt.UTC)
        self.reloads += 1
        self.last_error = ""
        logger.info("geo database reloaded from %s", self.path)
        return True

    def describe(self) -> dict[str, Any]:
        """What ``/geo/stats`` says of the file."""
        metadata = self.reader.metadata()
        built = dt.datetime.fromtimestamp(metadata.build_epoch, dt.UTC)
        return {
            "path": str(self.path),
            "type": metadata.database_type,
            "ip_version": metadata.ip_version,
            "built": built.isoformat(timespec="seconds"),
            "loaded": self.loaded_at.isoformat(timespec="seconds"),
            "reloads": self.reloads,
            "last_error": self.last_error or None,
        }
