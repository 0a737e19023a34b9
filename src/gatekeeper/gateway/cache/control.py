"""Parsing of the header fields that drive caching: Cache-Control and HTTP dates.

Parsing is lenient the way RFC 9111 asks: unknown directives are ignored, a malformed delta is
treated as absent, and a malformed ``Expires`` means "already expired" (section 5.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from functools import lru_cache

__all__ = ["CacheControl", "explicit_lifetime", "parse_cache_control", "parse_http_date"]


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date (IMF-fixdate and the two obsolete forms) as epoch seconds, else ``None``."""
    if not value:
        return None
    return _parse_http_date(value)


# Responses repeat the same few Date/Expires/Cache-Control values: parse each once.
@lru_cache(maxsize=1024)
def _parse_http_date(value: str) -> float | None:
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # HTTP dates are always GMT, even when the zone is missing
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _split_directives(value: str) -> list[tuple[str, str | None]]:
    """Split a Cache-Control value on commas outside quoted strings."""
    out: list[tuple[str, str | None]] = []
    current: list[str] = []
    quoted = False
    for char in value + ",":
        if char == '"':
            quoted = not quoted
            current.append(char)
        elif char == "," and not quoted:
            token = "".join(current).strip()
            current = []
            if not token:
                continue
            name, sep, arg = token.partition("=")
            argument = arg.strip().strip('"') if sep else None
            out.append((name.strip().lower(), argument))
        else:
            current.append(char)
    return out


def _delta(argument: str | None) -> int | None:
    """A delta-seconds argument; ``None`` when missing or malformed."""
    if argument is None or not argument.isdigit():
        return None
    # RFC 9111 1.2.2: values past 2**31 mean "practically forever"
    return min(int(argument), 2**31)


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The directives of one Cache-Control field (request or response) that the cache uses."""

    max_age: int | None = None
    s_maxage: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    min_fresh: int | None = None
    max_stale: int | None = None
    max_stale_any: bool = False
    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    only_if_cached: bool = False
    directives: frozenset[str] = field(default_factory=frozenset)


_EMPTY = CacheControl()


def parse_cache_control(value: str | None) -> CacheControl:
    """Parse a (combined) Cache-Control value. Duplicated deltas: the first one wins."""
    if not value:
        return _EMPTY
    return _parse_cache_control(value)


@lru_cache(maxsize=1024)
def _parse_cache_control(value: str) -> CacheControl:
    deltas: dict[str, int | None] = {}
    names: set[str] = set()
    max_stale_any = False
    for name, argument in _split_directives(value):
        names.add(name)
        if name in {"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error",
                    "min-fresh", "max-stale"} and name not in deltas:  # fmt: skip
            deltas[name] = _delta(argument)
            if name == "max-stale" and argument is None:
                max_stale_any = True
    return CacheControl(
        max_age=deltas.get("max-age"),
        s_maxage=deltas.get("s-maxage"),
        stale_while_revalidate=deltas.get("stale-while-revalidate"),
        stale_if_error=deltas.get("stale-if-error"),
        min_fresh=deltas.get("min-fresh"),
        max_stale=deltas.get("max-stale"),
        max_stale_any=max_stale_any,
        # A qualified no-cache="Set-Cookie" or private="X" is treated as unqualified: stricter,
        # and simpler than storing a response with some fields removed.
        no_store="no-store" in names,
        no_cache="no-cache" in names,
        private="private" in names,
        public="public" in names,
        must_revalidate="must-revalidate" in names,
        proxy_revalidate="proxy-revalidate" in names,
        only_if_cached="only-if-cached" in names,
        directives=frozenset(names),
    )


def explicit_lifetime(
    control: CacheControl, expires: str | None, date: str | None, response_time: float
) -> float | None:
    """Explicit freshness lifetime for a shared cache, or ``None`` without one.

    ``s-maxage`` beats ``max-age`` beats ``Expires - Date`` (``Date`` missing: the time the
    response was received); an unparsable ``Expires`` means already expired (lifetime 0).
    """
    if control.s_maxage is not None:
        return float(control.s_maxage)
    if control.max_age is not None:
        return float(control.max_age)
    if expires is None:
        return None
    expires_at = parse_http_date(expires)
    if expires_at is None:
        return 0.0
    date_value = parse_http_date(date)
    return max(0.0, expires_at - (date_value if date_value is not None else response_time))
