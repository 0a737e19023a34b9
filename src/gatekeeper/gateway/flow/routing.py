"""Routes: which requests go to which upstream pool, under which limits and timeouts.

A route matches on host (exact, or ``*.example.com``), path prefix (segment-aware: ``/api``
matches ``/api`` and ``/api/x`` but not ``/apix``) and method. The router tries routes from the
most specific to the least (longest prefix first, host-bound before host-less, then file order),
so the order of the file only breaks ties. Paths not matched by any route fall through to the
built-in API (``/health``, ``/metrics``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gatekeeper.gateway.flow.compression import Compression
    from gatekeeper.gateway.flow.cors import Cors
    from gatekeeper.gateway.flow.header_rules import HeaderRules

__all__ = ["LimitRule", "RetryPolicy", "Route", "Router", "Timeouts"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: to connect, between reads from the upstream, and for the whole exchange."""

    connect: float = 5.0
    read: float = 30.0
    total: float = 60.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry idempotent requests on another endpoint (within the pool's retry budget)."""

    attempts: int = 1
    on_status: frozenset[int] = frozenset({502, 503, 504})
    on_connect_error: bool = True
    on_timeout: bool = False
    methods: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True)
class LimitRule:
    """A named policy applied to a subject: ``ip``, ``api_key``, ``header:<name>``,
    ``query:<name>`` or ``global`` (one counter for everybody)."""

    policy: Any  # gatekeeper.limits.Policy
    key: str = "ip"


@dataclass(frozen=True, slots=True)
class Route:
    """One routing rule and everything the pipeline needs to serve what it matches."""

    name: str
    upstream: str
    path_prefix: str = "/"
    host: str | None = None
    methods: frozenset[str] | None = None
    limits: tuple[LimitRule, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cache: Any = None  # the cache engineer's per-route policy, or None (no caching)
    priority: int = 0
    strip_prefix: bool = False
    preserve_host: bool = True
    # The rate-limit fields answers carry: "ietf", "legacy", "both" or "none".
    ratelimit_headers: str = "ietf"
    # The largest request body accepted (413 beyond it), or None: no bound.
    max_body_bytes: int | None = None
    # Header rewrites towards the upstream and back to the client (gateway/flow/header_rules.py).
    request_headers: HeaderRules | None = None
    response_headers: HeaderRules | None = None
    # gzip for clients that accept it (gateway/flow/compression.py), or None.
    compress: Compression | None = None
    # The tenant (business_id) whose waiting room protects this route, or None.
    waiting_room: str | None = None
    # Credentials the identity guard must accept: "api_key", "jwt", "any", or None (no auth).
    auth: str | None = None
    # Tiers whose principals may pass (a tier gate), or None.
    tiers: frozenset[str] | None = None
    # Cross-origin requests (gateway/flow/cors.py), or None.
    cors: Cors | None = None
    # X-Response-Time and Server-Timing on the answers.
    timing: bool = False

    def matches(self, host: str, path: str, method: str) -> bool:
        """Whether this route takes the request (``host`` without port, lower case)."""
        if self.methods is not None and method not in self.methods:
            return False
        if self.host is not None:
            wanted = self.host
            if wanted.startswith("*."):
                if not host.endswith(wanted[1:]):
                    return False
            elif host != wanted:
                return False
        prefix = self.path_prefix
        if prefix == "/" or path == prefix:
            return True
        if not path.startswith(prefix):
            return False
        return prefix.endswith("/") or path[len(prefix)] in "/?"


def _specificity(route: Route) -> tuple[int, int]:
    return (-len(route.path_prefix), 0 if route.host is not None else 1)


class Router:
    """Finds the route of a request; ``None`` means "not proxied" (the built-in API)."""

    __slots__ = ("_reserved", "_reserved_dirs", "routes")

    def __init__(self, routes: Sequence[Route], reserved: Sequence[str] = ()) -> None:
        # sorted() is stable: equal specificity keeps the file's order.
        self.routes: tuple[Route, ...] = tuple(sorted(routes, key=_specificity))
        self._reserved = frozenset(reserved)
        self._reserved_dirs = tuple(r.rstrip("/") + "/" for r in reserved)

    def match(self, host: str, path: str, method: str) -> Route | None:
        """The first matching route for ``host`` (may carry ``:port``), ``path`` and ``method``.

        Reserved paths (the built-in API) never match a route, so a catch-all ``/`` route
        cannot hide ``/health`` or ``/metrics``.
        """
        if path in self._reserved or path.startswith(self._reserved_dirs):
            return None
        if host:
            colon = host.rfind(":")
            if colon != -1 and "]" not in host[colon:]:
                host = host[:colon]
            host = host.lower()
        for route in self.routes:
            if route.matches(host, path, method):
                return route
        return None
