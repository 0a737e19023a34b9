"""One request's way through the gateway, in one pass.

    client IP (socket; X-Forwarded-For only from trusted proxies)
    -> route match (host, path prefix, method); no route: the endpoint table (built-in API)
    -> authentication on routes with ``auth`` (the identity guard: credentials, bans, tier limits)
    -> rate limits: every policy of the route in ONE limiter call (batched per loop turn)
    -> admission (the pool's concurrency limit and priority queue)
    -> on routes with a cache, every method goes through ``ResponseCache.handle`` (it serves
       GET/HEAD and forwards the others itself, invalidating the URI an unsafe one changed)
    -> forward (balancer, retries, timeouts) -> response with RateLimit headers, metrics

A :class:`GatewayState` is immutable once built: a reload builds a new one and swaps it in, so a
request in flight finishes on the configuration it started with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import (
    BodyTooLarge,
    GatekeeperError,
    NoHealthyUpstream,
    QueueFull,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from gatekeeper.gateway import express
from gatekeeper.gateway.builtin_calls import answer_now, serve_call
from gatekeeper.gateway.client_ip import TrustedProxies
from gatekeeper.gateway.compression import compress_response
from gatekeeper.gateway.messages import Body, Headers, ProxyRequest, ProxyResponse, ResponseCache
from gatekeeper.gateway.protocol import EMPTY_BODY
from gatekeeper.gateway.proxy import Attempts, Proxy
from gatekeeper.gateway.routing import Route, Router
from gatekeeper.limits.headers import problem_body, rate_limit_headers
from gatekeeper.limits.policy import Check
from gatekeeper.observability.access import Termination
from gatekeeper.observability.proxied import ensure_request_id, log_builtin, log_proxied

if TYPE_CHECKING:
    from gatekeeper.endpoints import Dispatcher
    from gatekeeper.gateway.protocol import HttpProtocol
    from gatekeeper.limits.decision import Decision

__all__ = ["GatewayState", "subject_key"]

logger = logging.getLogger("gatekeeper.gateway")

_PROBLEM = b"application/problem+json"


def subject_key(kind: str, request: ProxyRequest) -> str:
    """The limit subject of ``request`` for a route's ``key`` setting."""
    if kind == "ip":
        return "ip:" + request.client_ip
    if kind == "global":
        return "global"
    if kind == "api_key":
        value = request.header(b"x-api-key") or _query_param(request.target, b"api_key")
        return "key:" + value.decode("latin-1") if value else "ip:" + request.client_ip
    source, _, name = kind.partition(":")
    if source == "header":
        value = request.header(name.encode("latin-1"))
    else:
        value = _query_param(request.target, name.encode("latin-1"))
    if not value:
        return "ip:" + request.client_ip
    return f"{source}:{name}:{value.decode('latin-1')}"


def _query_param(target: bytes, name: bytes) -> bytes | None:
    start = target.find(b"?")
    if start == -1:
        return None
    for pair in target[start + 1 :].split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == name:
            return value
    return None


@dataclass
class GatewayState:
    """Everything that serves requests under one configuration."""

    router: Router
    proxy: Proxy
    pools: dict[str, Any]
    trusted: TrustedProxies
    limiter: Any = None
    policies: dict[str, Any] = field(default_factory=dict)
    # The built-in endpoints (``gatekeeper.endpoints``): what answers a request no route takes.
    endpoints: Dispatcher | None = None
    cache: ResponseCache | None = None
    metrics: Any = None
    access_log: Any = None
    server_address: tuple[str, int] | None = None
    _checks: dict[tuple[str, str], Check] = field(default_factory=dict, init=False, repr=False)
    # id(route) -> client address -> the route's checks, for routes limited by IP (or
    # globally) only; None for other routes (filled on first use).
    _groups: dict[int, dict[str, tuple[Check, ...]] | None] = field(
        default_factory=dict, init=False, repr=False
    )
    # Requests answered this loop turn, accounted together at its end (see account()).
    _answered: list[tuple[ProxyRequest, Route, int, float, dict[str, Any] | None]] = field(
        default_factory=list, init=False, repr=False
    )
    # tenant -> waiting-room gate (``context.extras["waitingroom_gate"]``), or None.
    gate: Any = None
    # The identity guard (``context.extras["identity_guard"]``) for routes with ``auth``.
    guard: Any = None

    def begin(self, request: ProxyRequest, conn: HttpProtocol) -> bool:
        """Serve ``request`` on the express lane (``gateway/express.py``) if it qualifies;
        False: the caller runs :meth:`handle`."""
        return express.begin(self, request, conn)

    async def handle(self, request: ProxyRequest, conn: HttpProtocol) -> None:
        """Serve one request, writing its response to ``conn``."""
        trusted = self.trusted
        if trusted:
            request.client_ip = trusted.client_ip(
                request.peer_ip, request.header(b"x-forwarded-for")
            )
        route = self.router.match(request.host, request.path, request.method)
        if route is None:
            await self._builtin(request, conn)
            return
        request.route = route
        started = time.monotonic()
        status = 0
        limit = route.max_body_bytes
        if limit is not None and request.body is not EMPTY_BODY:
            request.body.limit = limit
        # Observability: the request id the upstream sees, and what ended the request.
        note: dict[str, Any] | None = None
        if self.access_log is not None:
            note = {"rid": ensure_request_id(request)}
        try:
            if limit is not None and max(request.body.length or 0, request.body.received) > limit:
                # Declared (or sent) larger than accepted: refused before anything else, and
                # the connection closes (the rest of the body is never read).
                detail = f"the request body is larger than {limit} bytes"
                status = await _error(conn, request, 413, "payload_too_large", detail, None)
            else:
                status = await self._proxy(request, route, conn, note)
        finally:
            self.account(conn.loop, request, route, status, started, note)

    def begin_builtin(self, request: ProxyRequest, conn: HttpProtocol) -> bool:
        """A request no route takes, its body in hand (called on the callback path): a
        synchronous endpoint is answered and written now (a streaming answer goes on in a
        task). False: the caller runs :meth:`handle` (an asynchronous endpoint, no table, or a
        body too large)."""
        table = self.endpoints
        if table is None or not table.answers_now(request.method, request.path):
            return False  # an asynchronous endpoint: the connection's worker serves it
        rid = ensure_request_id(request)
        started = time.monotonic()
        answered = answer_now(table, request, conn, rid)
        if answered is None:
            return False
        if isinstance(answered, int):
            self._log_builtin(request, rid, answered, started)
            conn.finish(request)
        else:
            conn.run(request, self._finish_builtin(request, rid, answered, started))
        return True

    async def _finish_builtin(
        self, request: ProxyRequest, rid: str, answered: Awaitable[int], started: float
    ) -> None:
        status = 499
        try:
            status = await answered
        except Exception:
            status = 500  # (the connection's worker answers it, or cuts a started answer)
            raise
        finally:
            self._log_builtin(request, rid, status, started)

    async def _builtin(self, request: ProxyRequest, conn: HttpProtocol) -> None:
        """A request no route takes, served by the endpoint table (or 404); its access line
        has no route (termination ``builtin`` or ``no_route``)."""
        rid = ensure_request_id(request)
        started = time.monotonic()
        status = 499
        try:
            status = await serve_call(self.endpoints, request, conn, rid)
        except Exception:
            status = 500  # (the connection's worker answers it, or cuts a started answer)
            raise
        finally:
            self._log_builtin(request, rid, status, started)

    def _log_builtin(self, request: ProxyRequest, rid: str, status: int, started: float) -> None:
        access = self.access_log
        if access is not None:
            log_builtin(access, request, rid, status, time.monotonic() - started)

    def account(
        self,
        loop: asyncio.AbstractEventLoop,
        request: ProxyRequest,
        route: Route,
        status: int,
        started: float,
        note: dict[str, Any] | None,
    ) -> None:
        """Count a request that matched ``route`` (status 0: never answered) in the metrics and
        write its access line, at the end of this loop turn.

        The requests answered in one turn are accounted together: one pass over the metrics
        and the access log for all of them costs about half as much CPU as the same work
        interleaved with the serving of each (measured with ``make bench``), and the turn
        ends before anything else can read the metrics.
        """
        answered = self._answered
        answered.append((request, route, status or 499, time.monotonic() - started, note))
        if len(answered) == 1:
            loop.call_soon(self._account_answered)

    def _account_answered(self) -> None:
        answered, self._answered = self._answered, []
        metrics = self.metrics
        access = self.access_log
        # (The in-flight gauge is not kept per request: it costs two locked updates on the hot
        # path; /stats reports in-flight connections from the server instead.)
        try:
            if metrics is not None:
                count = metrics.request
                for _, route, status, elapsed, _ in answered:
                    count(route.name, status, route.upstream, elapsed)
            if access is not None:
                for request, route, status, elapsed, note in answered:
                    log_proxied(access, request, route, status, elapsed, note)
        except Exception:  # observability must never fail serving
            logger.exception("accounting %d answered requests failed", len(answered))

    async def resume(
        self,
        request: ProxyRequest,
        conn: HttpProtocol,
        started: float,
        note: dict[str, Any] | None,
        extra: Headers | None,
        resumed: Attempts | None = None,
        error: UpstreamError | None = None,
    ) -> None:
        """Finish a request the express lane began, from forwarding on (its limits are
        decided): ``resumed`` says which attempts were made already; ``error``, if given,
        ended the last one and is answered without another attempt."""
        route = request.route
        assert route is not None
        status = 0
        try:
            status = await self._forward(
                request, route, conn, note, extra, resumed=resumed, error=error
            )
        finally:
            self.account(conn.loop, request, route, status, started, note)

    async def _proxy(
        self,
        request: ProxyRequest,
        route: Route,
        conn: HttpProtocol,
        note: dict[str, Any] | None = None,
    ) -> int:
        # The request id goes back to the client on every answer (when observability is on).
        echo: Headers | None = None
        if note is not None:
            echo = [(b"x-request-id", note["rid"].encode("latin-1"))]
        extra = echo
        priority = route.priority
        guard = self.guard
        # The identity's deny list guards every route (on routes with auth the guard checks
        # it, with the rest).
        if (
            route.auth is None
            and guard is not None
            and await guard.identity.ip_rules.match(request.client_ip) == "deny"
        ):
            _note(note, Termination.DENIED)
            denied = {"error": "ip_denied", "status": 403, "detail": "this address is denied"}
            await _send_json(conn, request, 403, echo or [], denied)
            return 403
        if route.auth is not None:
            verdict = await self._authenticate(request, route, conn, echo)
            if isinstance(verdict, int):
                return verdict
            priority += verdict.priority
            if verdict.headers:
                extra = [*echo, *verdict.headers] if echo else verdict.headers
        if route.limits and self.limiter is not None:
            decision: Decision = await self.limiter.decide(self.checks(route, request))
            if self.metrics is not None:
                self.count_decision(decision)
            if note is not None:
                note["decision"] = decision
            if not decision.allowed:
                headers = rate_limit_headers(decision, policies=self.policies)
                body = problem_body(decision, instance=request.path)
                await _send_bytes(conn, request, 429, [*echo, *headers] if echo else headers, body)
                return 429
            if route.ratelimit_headers:
                # The route's own limits replace the tier's fields (one RateLimit set only).
                fields = rate_limit_headers(decision, policies=self.policies)
                extra = [*echo, *fields] if echo else fields
        if route.waiting_room is not None and self.gate is not None:
            verdict = await self.gate(route.waiting_room).check_headers(
                request.headers, request.target
            )
            if not verdict.allowed:
                if note is not None:
                    note["term"] = Termination.WAITING_ROOM
                location = (verdict.redirect or "/").encode("latin-1")
                headers = [(b"location", location), (b"cache-control", b"no-store"), *(echo or ())]
                await conn.send_response(ProxyResponse(302, headers, Body.of(b"")), request)
                return 302
        return await self._forward(request, route, conn, note, extra, priority)

    async def _forward(
        self,
        request: ProxyRequest,
        route: Route,
        conn: HttpProtocol,
        note: dict[str, Any] | None,
        extra: Headers | None,
        priority: int = 0,
        *,
        resumed: Attempts | None = None,
        error: UpstreamError | None = None,
    ) -> int:
        """Admission, forwarding (or the cache) and the answer, upstream errors mapped to
        502/503/504."""
        pool = self.pools[route.upstream]
        control = getattr(pool, "admission_control", None)
        try:
            if error is not None:
                raise error
            if control is not None and control.max_concurrency is None:
                # No concurrency limit: skip the (allocating) async context manager.
                return await self._respond(request, route, conn, extra, resumed)
            async with pool.admission(priority):
                return await self._respond(request, route, conn, extra, resumed)
        except UpstreamTimeout as exc:
            _note(note, Termination.UPSTREAM_TIMEOUT)
            return await _error(conn, request, 504, "upstream_timeout", str(exc), extra)
        except NoHealthyUpstream as exc:
            _note(note, Termination.NO_UPSTREAM)
            return await _error(conn, request, 503, "no_healthy_upstream", str(exc), extra)
        except UpstreamConnectError as exc:
            _note(note, Termination.UPSTREAM_ERROR)
            return await _error(conn, request, 502, "bad_gateway", str(exc), extra)
        except UpstreamError as exc:
            _note(note, Termination.UPSTREAM_ERROR)
            return await _error(conn, request, 502, "bad_gateway", str(exc), extra)
        except BodyTooLarge as exc:  # a body without Content-Length grew past the bound
            return await _error(conn, request, 413, "payload_too_large", str(exc), extra)
        except QueueFull as exc:
            _note(note, Termination.QUEUE_FULL)
            retry = [(b"retry-after", str(exc.retry_after).encode())]
            return await _error(conn, request, 503, "queue_full", str(exc), (extra or []) + retry)

    async def _authenticate(
        self, request: ProxyRequest, route: Route, conn: HttpProtocol, echo: Headers | None
    ) -> _Admitted | int:
        """Ask the identity guard; the status already answered, or what admission needs."""
        mode = route.auth
        base: Headers = echo or []
        bearer, api_key = _credentials(mode, request)
        guard = self.guard
        if guard is None:
            body = {"error": "auth_unavailable", "status": 503, "detail": "identity is not running"}
            await _send_json(conn, request, 503, base, body)
            return 503
        if bearer is None and api_key is None:
            wanted = {"api_key": "an X-API-Key", "jwt": "a Bearer token"}.get(
                mode or "", "an X-API-Key or a Bearer token"
            )
            body = {"error": "unauthorized", "status": 401, "detail": f"this route needs {wanted}"}
            challenge = [] if mode == "api_key" else [(b"www-authenticate", b"Bearer")]
            await _send_json(conn, request, 401, [*base, *challenge], body)
            return 401
        verdict = await guard.check(request.client_ip, bearer=bearer, api_key=api_key)
        headers: Headers = []
        if verdict.decision is not None and route.ratelimit_headers:
            policies = {p.name: p for p in verdict.policies}
            headers = [
                h
                for h in rate_limit_headers(verdict.decision, policies=policies)
                if h[0] != b"retry-after"
            ]
        principal = verdict.principal
        if not verdict.allowed:
            if verdict.retry_after:
                headers.append((b"retry-after", str(verdict.retry_after).encode()))
            body = {"error": verdict.reason, "status": verdict.status, "detail": verdict.message}
            if principal is not None:
                body["tier"] = principal.tier
            await _send_json(conn, request, verdict.status, [*base, *headers], body)
            return int(verdict.status)
        priority = 0
        if principal is not None and principal.via != "admin_token":
            priority = await _tier_priority(guard, principal.tier)
        return _Admitted(priority, headers or None)

    async def _respond(
        self,
        request: ProxyRequest,
        route: Route,
        conn: HttpProtocol,
        extra: Headers | None,
        resumed: Attempts | None = None,
    ) -> int:
        cache = self.cache
        conn.abandonable = True
        try:
            if cache is not None and route.cache is not None and request.upgrade is None:
                response = await cache.handle(request, self.proxy.forward)
            else:
                response = await self.proxy.forward(request, resumed=resumed)
        finally:
            conn.abandonable = False
        rules = route.response_headers
        if rules is not None:
            response.headers = rules.apply(response.headers)
        if route.compress is not None and response.switched is None:
            response = compress_response(route.compress, request, response)
        if response.switched is not None:
            conn.switch(response, extra)  # a WebSocket: the connections are joined from now
            return 101
        await conn.send_response(response, request, extra)
        return response.status

    def checks(self, route: Route, request: ProxyRequest) -> tuple[Check, ...]:
        """The checks of ``route``'s limits for ``request`` (one limiter call decides them)."""
        return tuple(
            self._check(rule.policy, subject_key(rule.key, request)) for rule in route.limits
        )

    def groups_by_address(self, route: Route) -> dict[str, tuple[Check, ...]] | None:
        """A cache of ``route``'s checks per client address, when they depend on nothing else
        (limits keyed by ``ip`` or ``global`` only); None otherwise."""
        key = id(route)
        try:
            return self._groups[key]
        except KeyError:
            simple = all(rule.key in ("ip", "global") for rule in route.limits)
            groups: dict[str, tuple[Check, ...]] | None = {} if simple else None
            self._groups[key] = groups
            return groups

    def _check(self, policy: Any, key: str) -> Check:
        # Checks are immutable and the same clients come back: reuse them (bounded) instead
        # of building and validating one per request.
        cache = self._checks
        check = cache.get((policy.name, key))
        if check is None:
            if len(cache) >= 65536:
                cache.clear()
            check = cache[(policy.name, key)] = Check(policy, key)
        return check

    def count_decision(self, decision: Decision) -> None:
        """Count the limiter's verdict per policy (the metrics are bound)."""
        metrics = self.metrics
        for result in decision.results:
            if result.allowed:
                outcome = "allowed"
            elif result.shadow:
                outcome = "shadow_limited"
            else:
                outcome = "limited"
            metrics.decision(result.policy, outcome)

    async def start(self) -> None:
        """Start the pools' background work (health checks)."""
        for pool in self.pools.values():
            await pool.start()

    async def stop(self) -> None:
        """Stop the pools and close idle upstream connections."""
        for pool in self.pools.values():
            await pool.stop()
        self.proxy.close()


@dataclass(frozen=True, slots=True)
class _Admitted:
    """An authenticated request: its tier's queue priority and RateLimit fields."""

    priority: int
    headers: Headers | None


def _credentials(mode: str | None, request: ProxyRequest) -> tuple[str | None, str | None]:
    """``(bearer, api_key)`` as the route's ``auth`` mode accepts them."""
    bearer = api_key = None
    if mode != "api_key":
        scheme, _, value = (request.header(b"authorization") or b"").partition(b" ")
        if scheme.lower() == b"bearer" and value.strip():
            bearer = value.strip().decode("latin-1")
    if mode != "jwt":
        key = request.header(b"x-api-key") or _query_param(request.target, b"api_key")
        if key:
            api_key = key.decode("latin-1")
    return bearer, api_key


async def _tier_priority(guard: Any, tier: str) -> int:
    """The admission priority of ``tier`` (the tier's ``priority``; cached like its policies,
    for the identity cache's TTL; an unknown tier queues as 0)."""
    identity = guard.identity

    async def load() -> int:
        try:
            return int((await identity.tiers.get(tier)).priority)
        except GatekeeperError:
            return 0

    return int(await identity.cache.get_or_load("tier-priority", tier, load))


def _note(note: dict[str, Any] | None, term: Termination) -> None:
    if note is not None:
        note["term"] = term


_TITLES = {
    413: "Content Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


async def _error(
    conn: HttpProtocol,
    request: ProxyRequest,
    status: int,
    error: str,
    detail: str,
    extra: Sequence[tuple[bytes, bytes]] | None,
) -> int:
    if conn.response_started:
        # Headers are out already: all we can do is cut the stream.
        conn.keep_alive = False
        if conn.transport is not None:
            conn.transport.abort()
        return status
    logger.info("%s %s -> %d: %s", request.method, request.path, status, detail)
    payload = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "error": error,
    }
    body = json.dumps(payload, separators=(",", ":")).encode()
    await _send_bytes(conn, request, status, list(extra or ()), body)
    return status


async def _send_json(
    conn: HttpProtocol, request: ProxyRequest, status: int, headers: Headers, body: Any
) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = [*headers, (b"content-type", b"application/json")]
    await conn.send_response(ProxyResponse(status, headers, Body.of(data)), request)


async def _send_bytes(
    conn: HttpProtocol, request: ProxyRequest, status: int, headers: Headers, body: bytes
) -> None:
    headers = [*headers, (b"content-type", _PROBLEM)]
    await conn.send_response(ProxyResponse(status, headers, Body.of(body)), request)
