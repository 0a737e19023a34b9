"""Cache keys: the primary key of a URI and the secondary key of a variant (``Vary``).

The primary key covers the authority and the request target; GET and HEAD share it, so a HEAD
is answered from a stored GET. The secondary key is a digest of the request's values for the
header fields a response's ``Vary`` lists, normalized so that spelling differences that cannot
change the response (case of tokens that are case-insensitive, whitespace around commas) do not
split the cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from gatekeeper.gateway.cache.exchange import CacheRequest, Headers, get_headers

__all__ = ["normalize_value", "primary_key", "secondary_key", "vary_names", "vary_values"]

# Fields whose values are case-insensitive tokens (RFC 9110 12.5): lower-case them.
_CASE_INSENSITIVE = frozenset({"accept-encoding", "accept-language", "accept-charset", "accept"})


def primary_key(request: CacheRequest, namespace: str = "") -> str:
    """The key of the request's URI (``namespace`` separates e.g. routes); a fixed-size digest."""
    host = request.host.lower().rstrip(".")
    raw = f"{namespace}\n{host}\n{request.target}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def vary_names(vary_field: str | None) -> tuple[str, ...]:
    """The sorted, lower-cased, de-duplicated field names a ``Vary`` value lists."""
    if not vary_field:
        return ()
    names = {name.strip().lower() for name in vary_field.split(",")}
    names.discard("")
    return tuple(sorted(names))


def normalize_value(name: str, values: list[str]) -> str | None:
    """One canonical string for a request field's values; ``None`` when the field is absent."""
    if not values:
        return None
    items = [" ".join(part.split()) for value in values for part in value.split(",")]
    joined = ",".join(item for item in items if item)
    return joined.lower() if name in _CASE_INSENSITIVE else joined


def vary_values(headers: Headers, names: Iterable[str]) -> dict[str, str | None]:
    """The normalized request values of each of ``names``."""
    return {name: normalize_value(name, get_headers(headers, name)) for name in names}


def secondary_key(values: dict[str, str | None]) -> str:
    """A digest of a variant's selecting values; empty for a response without ``Vary``."""
    if not values:
        return ""
    raw = "\n".join(
        f"{name}\x00{'' if value is None else '=' + value}"
        for name, value in sorted(values.items())
    )
    return hashlib.blake2b(raw.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()
