"""Rate limiting for any ASGI app, as pure ASGI middleware (no framework needed)::

    app = RateLimitMiddleware(
        app,
        limiter=limiter,
        policies=[Policy.parse("per-ip", "100/minute")],
        routes=[RouteLimit("/login", [Policy.parse("login", "5/minute")], methods={"POST"})],
        trusted_proxies=["10.0.0.0/8"],
    )

Every policy of the matching route is decided in ONE limiter call (all-or-nothing). Admitted
responses get the ``RateLimit``/``RateLimit-Policy`` fields; denials get a 429 problem document
and ``Retry-After`` and never reach the app. Non-HTTP scopes (websocket, lifespan) and exempt
paths pass straight through.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.decision import Decision
from gatekeeper.limits.headers import rate_limit_headers, too_many_requests
from gatekeeper.limits.keys import KeyFunc, RequestView, by_ip, client_ip, parse_trusted_proxies
from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.policy import Algorithm, Check, Policy

__all__ = ["LimitSpec", "RateLimitMiddleware", "RouteLimit"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LimitSpec = Policy | tuple[Policy, KeyFunc]
"""A policy (keyed by the middleware's default key function) or ``(policy, key function)``."""


@dataclass(frozen=True)
class RouteLimit:
    """Policies for requests whose path starts with ``prefix`` (and whose method is in
    ``methods``, if given). The longest matching prefix wins. ``cost`` weighs each hit."""

    prefix: str
    policies: Sequence[LimitSpec]
    methods: Collection[str] | None = None
    key: KeyFunc | None = None
    cost: int = 1

    def __post_init__(self) -> None:
        if self.methods is not None:
            object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        if not self.prefix.startswith("/"):
            raise ConfigurationError(f"route prefix {self.prefix!r} must start with '/'")

    def matches(self, path: str, method: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        prefix = self.prefix
        return path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/")


def _under(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


class RateLimitMiddleware:
    """Pure ASGI rate-limit middleware (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Limiter,
        policies: Sequence[LimitSpec] = (),
        key: KeyFunc = by_ip,
        routes: Sequence[RouteLimit] | None = None,
        exempt: Sequence[str] = ("/health",),
        legacy_headers: bool = False,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.default = RouteLimit("/", tuple(policies), key=key)
        # Longest prefix first, so that the most specific route wins.
        self.routes = sorted(routes or (), key=lambda r: len(r.prefix), reverse=True)
        self.default_key = key
        self.exempt = tuple(exempt)
        self.legacy_headers = legacy_headers
        self.trusted_proxies = parse_trusted_proxies(trusted_proxies)
        self.policies: dict[str, Policy] = {}
        for route in (self.default, *self.routes):
            for spec in route.policies:
                policy = spec if isinstance(spec, Policy) else spec[0]
                self.policies[policy.name] = policy

    def route_for(self, path: str, method: str) -> RouteLimit:
        """The route whose policies apply (the default policies when none matches)."""
        for route in self.routes:
            if route.matches(path, method):
                return route
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _under(scope["path"], self.exempt):
            await self.app(scope, receive, send)
            return
        route = self.route_for(scope["path"], scope["method"])
        if not route.policies:
            await self.app(scope, receive, send)
            return
        request = RequestView(scope, client_ip(scope, self.trusted_proxies))
        checks, lease_id = await self._checks(route, request)
        if not checks:
            await self.app(scope, receive, send)
            return
        decision = await self.limiter.decide(checks)
        if not decision.allowed:
            await self._deny(decision, scope, send)
            return
        try:
            await self.app(scope, receive, self._with_headers(decision, send))
        finally:
            if lease_id is not None:
                leased = [c for c in checks if c.lease_id is not None]
                await self.limiter.release(leased, lease_id, degraded=decision.degraded)

    async def _checks(
        self, route: RouteLimit, request: RequestView
    ) -> tuple[list[Check], str | None]:
        checks: list[Check] = []
        lease_id: str | None = None
        keys: dict[Any, str | None] = {}
        for spec in route.policies:
            if isinstance(spec, Policy):
                policy, function = spec, route.key or self.default_key
            else:
                policy, function = spec
            if function in keys:
                key = keys[function]
            else:
                value = function(request)
                if value is not None and not isinstance(value, str):
                    value = await value
                key = keys[function] = value
            if not key:
                continue  # this policy does not apply to this request (e.g. no API key)
            if policy.algorithm is Algorithm.CONCURRENCY:
                lease_id = lease_id or uuid.uuid4().hex
                checks.append(Check(policy, key, route.cost, lease_id=lease_id))
            else:
                checks.append(Check(policy, key, route.cost))
        return checks, lease_id

    def _with_headers(self, decision: Decision, send: Send) -> Send:
        extra = rate_limit_headers(decision, policies=self.policies, legacy=self.legacy_headers)
        if not extra:
            return send

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        return send_with_headers

    async def _deny(self, decision: Decision, scope: Scope, send: Send) -> None:
        status, headers, body = too_many_requests(
            decision, policies=self.policies, legacy=self.legacy_headers, instance=scope["path"]
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
