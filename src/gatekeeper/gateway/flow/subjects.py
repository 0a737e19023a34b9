"""Who a route's limits count: the subject key of a request, and the checks a request brings.

A route's ``limits`` name a policy and a key kind: ``ip``, ``global`` (one counter for
everybody), ``api_key`` (the ``X-API-Key`` header or ``api_key`` query parameter, else the IP),
``header:<name>`` or ``query:<name>`` (else the IP), ``path``, ``method``, ``route`` or
``segment:<n>`` (the n-th segment of the path); or several joined with ``+``, one bucket per
combination (``ip+path``: per client and endpoint). The checks of a request are immutable and
the same clients come back, so they are kept per (policy, key), bounded, instead of being built
and validated per request; a concurrency policy's check carries a lease id of its own per
request, so it is built each time.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from typing import TYPE_CHECKING, Any, Protocol

from gatekeeper.limits.policy import Algorithm, Check

if TYPE_CHECKING:
    from gatekeeper.gateway.flow.routing import Route
    from gatekeeper.gateway.http.messages import ProxyRequest

__all__ = ["Checks", "Subjected", "shown_subject", "subject_key"]


class Subjected(Protocol):
    """What the subject rule reads of a request (the gateway's request has it all; the
    rate-status endpoint builds one for the path a caller asks about)."""

    client_ip: str
    path: str
    method: str
    target: bytes
    route: Any

    def header(self, name: bytes) -> bytes | None: ...


_BOUND = 65536
_CONCURRENCY = Algorithm.CONCURRENCY


def subject_key(kind: str, request: Subjected) -> str:
    """The limit subject of ``request`` for a route's ``key`` setting."""
    if "+" in kind:
        return "+".join(_part(part, request) for part in kind.split("+"))
    return _part(kind, request)


def _part(kind: str, request: Subjected) -> str:
    if kind == "ip":
        return "ip:" + request.client_ip
    if kind == "global":
        return "global"
    if kind == "api_key":
        value = request.header(b"x-api-key") or query_param(request.target, b"api_key")
        return "key:" + value.decode("latin-1") if value else "ip:" + request.client_ip
    if kind == "path":
        return "path:" + request.path
    if kind == "method":
        return "method:" + request.method
    if kind == "route":
        return "route:" + (request.route.name if request.route is not None else "")
    source, _, name = kind.partition(":")
    if source == "segment":
        segments = request.path.split("/")
        index = int(name)
        return f"segment:{name}:{segments[index] if index < len(segments) else ''}"
    if source == "header":
        value = request.header(name.encode("latin-1"))
    else:
        value = query_param(request.target, name.encode("latin-1"))
    if not value:
        return "ip:" + request.client_ip
    return f"{source}:{name}:{value.decode('latin-1')}"


def query_param(target: bytes, name: bytes) -> bytes | None:
    """The first value of query parameter ``name`` in a raw request target, or None."""
    start = target.find(b"?")
    if start == -1:
        return None
    for pair in target[start + 1 :].split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == name:
            return value
    return None


def shown_subject(route: Route, request: Subjected, policy: str) -> str | None:
    """The limited subject as logs and dashboards may show it: IPs as they are, secrets (API
    keys, header and query values) replaced by a short hash that still groups by client."""
    for rule in route.limits:
        if rule.policy.name == policy:
            return "+".join(_shown(part) for part in subject_key(rule.key, request).split("+"))
    return None


_PLAIN = ("ip:", "path:", "method:", "route:", "segment:")


def _shown(subject: str) -> str:
    if subject.startswith(_PLAIN) or subject == "global":
        return subject
    prefix, _, secret = subject.rpartition(":")
    digest = hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()[:12]
    return f"{prefix}:#{digest}"


class _LeaseIds:
    """Lease ids unique across processes and replicas: a random prefix and a counter."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.count = itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.count):x}"


_LEASES = _LeaseIds()


class Checks:
    """The checks of each route's limits for a request (one limiter call decides them)."""

    def __init__(self) -> None:
        self._checks: dict[tuple[str, str], Check] = {}
        # id(route) -> client address -> the route's checks, for routes limited by IP (or
        # globally) only, without concurrency policies; None for other routes.
        self._groups: dict[int, dict[str, tuple[Check, ...]] | None] = {}

    def of(self, route: Route, request: ProxyRequest) -> tuple[tuple[Check, ...], str | None]:
        """The checks of ``route`` for ``request`` and the lease id they carry (a route with
        a concurrency policy holds a lease for the life of the request), or None."""
        key = id(route)
        try:
            groups = self._groups[key]
        except KeyError:
            groups = self._groups[key] = self._simple(route)
        if groups is not None:
            address = request.client_ip
            group = groups.get(address)
            if group is None:
                if len(groups) >= _BOUND:
                    groups.clear()
                group = groups[address] = self._build(route, request, None)
            return group, None
        lease = _LEASES.new() if _holds_lease(route) else None
        return self._build(route, request, lease), lease

    @staticmethod
    def _simple(route: Route) -> dict[str, tuple[Check, ...]] | None:
        simple = all(rule.key in ("ip", "global") for rule in route.limits)
        return {} if simple and not _holds_lease(route) else None

    def _build(self, route: Route, request: ProxyRequest, lease: str | None) -> tuple[Check, ...]:
        return tuple(
            self._check(rule.policy, subject_key(rule.key, request), lease) for rule in route.limits
        )

    def _check(self, policy: Any, key: str, lease: str | None) -> Check:
        if policy.algorithm is _CONCURRENCY:
            return Check(policy, key, lease_id=lease)
        cache = self._checks
        check = cache.get((policy.name, key))
        if check is None:
            if len(cache) >= _BOUND:
                cache.clear()
            check = cache[(policy.name, key)] = Check(policy, key)
        return check


def _holds_lease(route: Route) -> bool:
    return any(rule.policy.algorithm is _CONCURRENCY for rule in route.limits)
