"""What may be stored, for how long, and when a stored response may be served (RFC 9111).

The gateway is a *shared* cache: ``s-maxage`` wins over ``max-age``, ``private`` responses are
never stored, and responses to requests carrying ``Authorization`` are stored only when the
response explicitly allows it. Deliberate choices (documented in docs/cache.md):

- no heuristic freshness: a response without ``max-age``, ``s-maxage`` or ``Expires`` is stored
  only when it can be revalidated (ETag or Last-Modified) and is then revalidated on every use,
  unless its route sets a ``default_ttl`` (the request's ``default_ttl``): it is then fresh for
  that long (``no-store``, ``private``, ``Authorization`` and ``Set-Cookie`` still forbid
  storing it, ``no-cache`` still makes every use a revalidation);
- responses with ``Set-Cookie`` are never stored (a cookie meant for one client must not be
  replayed to others);
- ``Vary: *`` is never stored, since it can never match;
- ``must-revalidate`` / ``proxy-revalidate`` forbid serving stale content, even under
  ``stale-while-revalidate`` or ``stale-if-error``; ``s-maxage`` alone does not (unlike the
  strict reading of RFC 9111 5.2.2.10, which would make those two directives useless next to
  ``s-maxage``, the way CDNs combine them).
"""

from __future__ import annotations

from dataclasses import dataclass

from gatekeeper.gateway.cache.control import CacheControl, explicit_lifetime, parse_cache_control
from gatekeeper.gateway.cache.entry import CacheEntry
from gatekeeper.gateway.cache.exchange import CacheRequest, Headers, get_header

__all__ = [
    "CACHEABLE_METHODS",
    "STORABLE_STATUSES",
    "Freshness",
    "bypass_reason",
    "freshness",
    "freshness_lifetime",
    "not_storable_reason",
    "serve_stale_on_error",
    "serve_while_revalidating",
    "store_ttl",
]

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
# Final statuses a shared cache understands and may store (RFC 9110 15.1 "heuristically
# cacheable" plus 203/204/300/308); 206 is excluded because ranges are not cached.
STORABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})


def bypass_reason(request: CacheRequest) -> str | None:
    """Why the cache must not even look at this request, or ``None``.

    Returns an RFC 9211 ``fwd`` value: ``method`` for anything but GET/HEAD, ``bypass`` for a
    range request (ranges are forwarded untouched and never stored).
    """
    if request.method.upper() not in CACHEABLE_METHODS:
        return "method"
    if request.header("range") is not None:
        return "bypass"
    return None


def freshness_lifetime(headers: Headers, response_time: float) -> float | None:
    """Explicit freshness lifetime in seconds of a response's fields (see ``explicit_lifetime``)."""
    return explicit_lifetime(
        parse_cache_control(get_header(headers, "cache-control")),
        get_header(headers, "expires"),
        get_header(headers, "date"),
        response_time,
    )


def not_storable_reason(request: CacheRequest, status: int, headers: Headers) -> str | None:
    """Why a response may not be stored by a shared cache, or ``None`` when it may.

    The reason is a short token used as the Cache-Status ``detail``.
    """
    request_cc = parse_cache_control(request.header("cache-control"))
    control = parse_cache_control(get_header(headers, "cache-control"))
    if request.method.upper() != "GET":
        return "method"
    if request_cc.no_store or control.no_store:
        return "no-store"
    if control.private:
        return "private"
    if status not in STORABLE_STATUSES:
        return "status"
    if get_header(headers, "set-cookie") is not None:
        return "set-cookie"
    vary = get_header(headers, "vary")
    if vary is not None and "*" in {name.strip() for name in vary.split(",")}:
        return "vary-star"
    if request.header("authorization") is not None and not (
        control.public or control.s_maxage is not None or control.must_revalidate
    ):
        return "authorization"
    has_validator = get_header(headers, "etag") or get_header(headers, "last-modified")
    explicit = freshness_lifetime(headers, 0.0)
    if explicit is None and not has_validator and not request.default_ttl:
        return "no-freshness"
    return None


@dataclass(frozen=True, slots=True)
class Freshness:
    """How fresh an entry is now, and whether it may be served without asking the upstream."""

    lifetime: float
    age: float
    usable: bool
    """Fresh enough for this request and not marked for revalidation on every use."""

    @property
    def ttl(self) -> float:
        """Seconds of freshness left (negative when stale)."""
        return self.lifetime - self.age

    @property
    def staleness(self) -> float:
        """Seconds past freshness (0 while fresh)."""
        return max(0.0, -self.ttl)


def freshness(
    entry: CacheEntry, request_cc: CacheControl, now: float, *, honor_request: bool = True
) -> Freshness:
    """Whether ``entry`` can be served as is to a request with directives ``request_cc``."""
    lifetime = entry.lifetime or 0.0
    age = entry.age(now)
    control = entry.cache_control
    usable = age < lifetime and not control.no_cache
    if honor_request and usable:
        too_old = request_cc.max_age is not None and age > request_cc.max_age
        too_close = request_cc.min_fresh is not None and lifetime - age < request_cc.min_fresh
        usable = not (request_cc.no_cache or too_old or too_close)
    elif honor_request and not usable and not control.no_cache and not _no_stale(control):
        # max-stale: the client accepts a stale answer without revalidation
        stale_for = age - lifetime
        if request_cc.max_stale_any or (
            request_cc.max_stale is not None and stale_for <= request_cc.max_stale
        ):
            usable = not request_cc.no_cache
    return Freshness(lifetime=lifetime, age=age, usable=usable)


def _no_stale(control: CacheControl) -> bool:
    return control.must_revalidate or control.proxy_revalidate


def serve_while_revalidating(entry: CacheEntry, state: Freshness) -> bool:
    """Whether a stale entry may be served while one background refresh runs (RFC 5861)."""
    control = entry.cache_control
    window = control.stale_while_revalidate
    if window is None or _no_stale(control) or control.no_cache:
        return False
    return state.staleness > 0 and state.staleness <= window


def serve_stale_on_error(entry: CacheEntry, state: Freshness, request_cc: CacheControl) -> bool:
    """Whether a stale entry may stand in for a failed or 5xx upstream (RFC 5861)."""
    control = entry.cache_control
    if _no_stale(control):
        return False
    windows = [w for w in (control.stale_if_error, request_cc.stale_if_error) if w is not None]
    return bool(windows) and state.staleness <= max(windows)


def store_ttl(entry: CacheEntry, now: float, validator_grace: float) -> float:
    """How long a store should keep ``entry``: freshness left plus every stale window.

    Entries with a validator are kept ``validator_grace`` seconds longer so that they can be
    revalidated (a cheap 304) instead of fetched again.
    """
    lifetime = entry.lifetime or 0.0
    control = entry.cache_control
    extra = 0.0
    if not _no_stale(control):
        extra = float(max(control.stale_while_revalidate or 0, control.stale_if_error or 0))
    if entry.has_validator:
        extra = max(extra, validator_grace)
    return max(1.0, lifetime - entry.age(now) + extra)
