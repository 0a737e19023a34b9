"""The request path: every step a request goes through, in order, each written once.

    ResolveClient    the client address: the socket's, or X-Forwarded-For from trusted proxies
    IdentifyRequest  the request id (the client's X-Request-ID if sane): upstream, logs, answer
    MatchRoute       host, path prefix and method; no route: the built-in endpoints
    ---- a route's plan: the steps below that apply to it (decided once per configuration) ----
    AllowOrigin      CORS: preflights answered here (never forwarded nor limited); allowed
                     origins get the Access-Control-* fields on every answer
    BoundBody        413 for a body larger than the route accepts
    DenyAddress      the identity's deny list (routes with ``auth`` check it with the rest)
    Authenticate     credentials, bans and tier limits (the identity guard); 401/403/429
    GateTier         only the route's tiers pass; 403 naming them
    Limit            every policy of the route in ONE limiter call (batched per loop turn); 429
    WaitingRoom      a visitor without a ready token goes to the waiting page (302)
    Geo              a geo route's datacenter: the nearest that can serve (residency: 503)
    Admit            the pool's concurrency limit and priority queue; 503 when full
    Cache            a fresh stored answer; else the cache fetches (and stores) the answer
    Forward          balance, attempts and retries; the answer relayed as it is parsed

The built-in endpoints' plan is :class:`AllowOrigin` (with the file's top-level ``cors``) and
:class:`Dispatch`. How steps run (on callbacks while
they answer at once, in a task once one must wait) is :mod:`.exchange`'s.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import GatekeeperError, QueueFull
from gatekeeper.gateway.flow.exchange import TAKEN, Exchange, Step
from gatekeeper.gateway.flow.subjects import query_param
from gatekeeper.gateway.geo.router import Refusal
from gatekeeper.gateway.http.protocol import EMPTY_BODY
from gatekeeper.gateway.upstream.forward import Forwarding, ResponseBuilder, fetch
from gatekeeper.identity.credentials import credentials, missing_credentials, verdict_fields
from gatekeeper.limits.headers import problem_body, rate_limit_headers
from gatekeeper.observability.access import Termination
from gatekeeper.observability.proxied import ensure_request_id

if TYPE_CHECKING:
    from gatekeeper.gateway.flow.routing import Route
    from gatekeeper.gateway.flow.snapshot import Snapshot
    from gatekeeper.gateway.http.messages import ProxyResponse
    from gatekeeper.limits.decision import Decision

__all__ = ["BUILTIN", "ENTRY", "PATH", "builtin_plan", "plan_for"]

_REQUEST_ID = b"x-request-id"
_PROBLEM = (b"content-type", b"application/problem+json")
_CACHEABLE = frozenset({"GET", "HEAD"})
_UNKNOWN = "unknown"  # IpRules.match_now's answer when the rules are not in memory


class ResolveClient(Step):
    """The client's address: X-Forwarded-For is believed only from trusted proxies."""

    __slots__ = ()
    name = "client_ip"

    def enter(self, ex: Exchange) -> None:
        trusted = ex.snapshot.trusted
        if trusted:
            request = ex.request
            request.client_ip = trusted.client_ip(
                request.peer_ip, request.header(b"x-forwarded-for")
            )


class IdentifyRequest(Step):
    """Every request gets an id, sent upstream, written in its log lines, echoed back."""

    __slots__ = ()
    name = "request_id"

    def enter(self, ex: Exchange) -> None:
        ex.rid = rid = ensure_request_id(ex.request)
        ex.extra = [(_REQUEST_ID, rid.encode("latin-1"))]


class MatchRoute(Step):
    """The route of the request, and with it the rest of the plan."""

    __slots__ = ()
    name = "route"

    def enter(self, ex: Exchange) -> None:
        request = ex.request
        snapshot = ex.snapshot
        route = snapshot.router.match(request.host, request.path, request.method)
        ex.index = 0
        if route is None:
            ex.plan = snapshot.builtin
            return
        ex.route = request.route = route
        ex.priority = route.priority
        ex.plan = snapshot.plans[id(route)]


class AllowOrigin(Step):
    """Cross-origin requests (see :mod:`.cors`): a preflight is answered now; an allowed
    origin's request goes on, its answer carrying the Access-Control-* fields."""

    __slots__ = ()
    name = "cors"

    def applies(self, route: Route, snapshot: Snapshot) -> bool:
        return route.cors is not None

    def enter(self, ex: Exchange) -> None:
        request = ex.request
        origin = request.header(b"origin")
        if origin is None:
            return
        route = ex.route
        cors = route.cors if route is not None else ex.snapshot.cors
        assert cors is not None  # (the step is in the plan only with a policy)
        method = request.header(b"access-control-request-method")
        if request.method == "OPTIONS" and method is not None:
            requested = request.header(b"access-control-request-headers")
            status, fields, why = cors.preflight(origin, method, requested)
            ex.term = Termination.PREFLIGHT
            if status == 204:
                ex.answer(204, fields, b"")
            else:
                ex.answer_problem(403, "cors_refused", why)
            return
        if cors.allows(origin.decode("latin-1")):
            fields = cors.answer_fields(origin)
            ex.extra = [*ex.extra, *fields] if ex.extra else fields


class BoundBody(Step):
    """A body larger than the route accepts is refused before anything else is spent."""

    __slots__ = ()
    name = "body_bounds"

    def applies(self, route: Route, snapshot: Snapshot) -> bool:
        return route.max_body_bytes is not None

    def enter(self, ex: Exchange) -> None:
        request = ex.request
        body = request.body
        limit = ex.route.max_body_bytes  # type: ignore[union-attr]
        if body is EMPTY_BODY:
            return
        body.limit = limit  # a body still arriving fails once it grows past the bound
        if max(body.length or 0, body.received) > limit:  # type: ignore[operator]
            # The rest of the body is never read, so the connection closes after the answer.
            ex.conn.keep_alive = False
            ex.answer_problem(
                413, "payload_too_large", f"the request body is larger than {limit} bytes"
            )


class DenyAddress(Step):
    """The identity's deny list guards every route (routes with ``auth`` check it with the
    rest of the identity's rules)."""

    __slots__ = ()
    name = "deny_list"

    def applies(self, route: Route, snapshot: Snapshot) -> bool:
        return snapshot.guard is not None and route.auth is None

    def enter(self, ex: Exchange) -> Any:
        guard = ex.snapshot.guard
        assert guard is not None  # applies() admits the step only with a guard
        rules = guard.identity.ip_rules
        rule = rules.match_now(ex.request.client_ip)
        if rule == _UNKNOWN:
            return rules.match(ex.request.client_ip)  # the rules are loaded on the way
        self.resume(ex, rule)
        return None

    def resume(self, ex: Exchange, rule: str | None) -> None:
        if rule == "deny":
            ex.term = Termination.DENIED
            ex.answer_problem(403, "ip_denied", "this address is denied")


class Authenticate(Step):
    """Credentials the route's ``auth`` accepts, bans, and the principal's tier limits."""

    __slots__ = ()
    name = "authenticate"

    def applies(self, route: Route, snapshot: Snapshot) -> bool:
        return route.auth is not None

    def enter(self, ex: Exchange) -> Awaitable[Any] | None:
        guard = ex.snapshot.guard
        if guard is None:
            ex.answer_problem(503, "auth_unavailable", "identity is not running")
            return None
        mode = ex.route.auth  # type: ignore[union-attr]
        request = ex.request
        bearer, api_key = credentials(
            mode,
            request.header(b"authorization"),
            request.header(b"x-api-key") or query_param(request.target, b"api_key"),
        )
        if bearer is None and api_key is None:
            detail, challenge = missing_credentials(mode)
            ex.term = Termination.UNAUTHENTICATED
            ex.answer_problem(401, "unauthorized", detail, challenge)
            return None
        return _authenticate(guard, ex.request.client_ip, bearer, api_key)

    def resume(self, ex: Exchange, verdict_and_priority: tuple[Any, int]) -> None:
        verdict, priority = verdict_and_priority
        headers = verdict_fields(verdict, ex.route.ratelimit_headers)  # type: ignore[union-attr]
        principal = verdict.principal
        ex.principal = principal
        if not verdict.allowed:
            extra: dict[str, Any] = {}
            if principal is not None:
                extra["tier"] = principal.tier
            ex.term = Termination.UNAUTHENTICATED if verdict.status == 401 else Termination.DENIED
            ex.answer_problem(
                int(verdict.status), verdict.reason, verdict.message, headers, **extra
            )
            return
        ex.priority += priority
        if headers:
            ex.limit_fields = headers


class GateTier(Step):
    """Only principals of the route's tiers pass (the administrator's token passes too)."""

    __slots__ = ()
    name = "tiers"

    def applies(self, route: Route, snapshot: Snapshot) -> bool:
        return route.tiers is not None

    def enter(self, ex: Exchange) -> None:
        tiers = ex.route.tiers  # type: ignore[union-attr]
        assert tiers is not None
        principal = ex.principal
        if principal is None:  # (Authenticate answered 401 before: a guard without identity)
            ex.term = Termination.UNAUTHENTICATED
            ex.answer_problem(401, "unauthorized", "this route needs credentials")
            return
        if principal.via == "admin_token" or principal.tier in tiers:
            return
        allowed = sorted(tiers)
        ex.term = Termination.DENIED
        ex.answer_problem(
            403,
            "tier_required",
            f"this route is for the {', '.join(allowed)} tier(s); yours is {principal.tier}",
            tiers=allowed,
            tier=principal.tier,
        )


class Limit(Step):
    """Every policy of the route decided in one limiter call, all or nothing."""

    __slots__ = ()
    name = "limits"

    def applies(self, route: Route, snapshot: Snapshot) -> bool:
        return bool(route.limits) and snapshot.limiter is not None

    def enter(self, ex: Exchange) -> Awaitable[Decision]:
        checks, lease = ex.snapshot.checks.of(ex.route, ex.request)  # type: ignore[arg-type]
        if lease is not None:
            ex.lease = (checks, lease)  # given back when the exchange settles, if admitted
        limiter = ex.snapshot.limiter
        assert limiter is not None  # applies() admits the step only with a limiter
        return limiter.decide(checks)

    def resume(self, ex: Exchange, decision: Decision) -> None:
        ex.decision = decision
        ex.flow.accounting.decided(decision)
        snapshot = ex.snapshot
        style = ex.route.ratelimit_headers  # type: ignore[union-attr]
        if not decision.allowed:
            ex.lease = None  # all or nothing: a denied group took no lease
            request = ex.request
            fields = rate_limit_headers(decision, policies=snapshot.policies, style=style)
            body = problem_body(decision, instance=request.path)
            ex.term = Termination.LIMITED
            ex.limit_fields = None  # (the 429's own fields say it all)
            ex.answer(429, [*fields, _PROBLEM], body)
            return
        if style != "none":
            # The route's own limits replace the tier's fields (one RateLimit set only).
            ex.limit_fields = rate_limit_headers(decision, policies=snapshot.policies, style=style)

    def discard(self, ex: Exchange, decision: Decision) -> None:
        lease = ex.lease
        if lease is not None and decision.allowed:
            ex.lease = None
            ex.flow.release_lease(lease, decision)


class WaitingRoom(Step):
    """A visitor without a ready token for the route's tenant goes to the waiting page."""

    __slots__ = ()
    name = "waiting_room"

    def applies(self, route: Route, snapshot: Snapshot) -> bool:
        return route.waiting_room is not None and snapshot.gate is not None

    def enter(self, ex: Exchange) -> Awaitable[Any]:
        gates, tenant = ex.snapshot.gate, ex.route.waiting_room  # type: ignore[union-attr]
        assert gates is not None  # as applies() admitted the step
        assert tenant is not None
        return gates(tenant).check_headers(ex.request.headers, ex.request.target)

    def resume(self, ex: Exchange, verdict: Any) -> None:
        if not verdict.allowed:
            ex.term = Termination.WAITING_ROOM
            location = (verdict.redirect or "/").encode("latin-1")
            ex.answer(302, [(b"location", location), (b"cache-control", b"no-store")], b"")
        elif verdict.headers:  # e.g. let in on a ready token alone, the queue's store down
            ex.extra = [*(ex.extra or ()), *verdict.headers]


class Geo(Step):
    """A geo route's datacenter: the nearest whose pool can serve, as residency allows; the
    request then goes to that pool (see gateway/geo/router.py)."""

    __slots__ = ()
    name = "geo"

    def applies(self, route: Route, snapshot: Snapshot) -> bool:
        return route.geo is not None and snapshot.geo is not None

    def enter(self, ex: Exchange) -> None:
        geo = ex.snapshot.geo
        assert geo is not None  # applies() admits the step only with a geo router
        chosen = geo.route(ex.route, ex.request)
        if isinstance(chosen, Refusal):
            ex.term = Termination.NO_UPSTREAM
            ex.answer_problem(
                503, chosen.error, chosen.detail,
                region=chosen.region, datacenters=list(chosen.datacenters),
            )  # fmt: skip
            return
        fields = chosen.fields  # the datacenter's name and region, for the answer
        if fields:
            extra = ex.extra
            ex.extra = [*extra, *fields] if extra else list(fields)


class Admit(Step):
    """The pool's concurrency limit: a slot now, or a place in its priority queue."""

    __slots__ = ()
    name = "admission"
    abandonable = True

    def applies(self, route: Route, snapshot: Snapshot) -> bool:
        if route.geo is not None and snapshot.geo is not None:
            pools = [dc.pool for dc in snapshot.geo.datacenters]  # whichever the request gets
        else:
            pools = [snapshot.pools[route.upstream]]
        for pool in pools:
            control = getattr(pool, "admission_control", None)
            if control is not None and control.max_concurrency is not None:
                return True
        return False

    def enter(self, ex: Exchange) -> Awaitable[None] | None:
        pool = ex.snapshot.pools[ex.request.upstream or ex.route.upstream]  # type: ignore[union-attr]
        control = pool.admission_control
        if control.max_concurrency is None:
            return None  # a geo route's datacenter without a limit
        if control.try_acquire():
            ex.slot = control
            return None
        return _queued(ex, control)

    def resume(self, ex: Exchange, control: Any) -> None:
        if isinstance(control, QueueFull):
            ex.answer_error(control)
            return
        ex.slot = control

    def discard(self, ex: Exchange, control: Any) -> None:
        if not isinstance(control, QueueFull):
            control.release()


class Cache(Step):
    """A fresh stored answer is written at once; other requests go through the cache, which
    fetches (revalidates, stores) and answers, and invalidates what unsafe methods change."""

    __slots__ = ()
    name = "cache"
    abandonable = True

    def applies(self, route: Route, snapshot: Snapshot) -> bool:
        return route.cache is not None and snapshot.cache is not None

    def enter(self, ex: Exchange) -> Any:
        request = ex.request
        cache = ex.snapshot.cache
        assert cache is not None
        if request.upgrade is not None:
            return None  # a protocol switch is never cached: forward it
        if request.method in _CACHEABLE and ex.route.response_headers is None:  # type: ignore[union-attr]
            hit = cache.fresh_hit(request)
            if hit is not None:
                ex.term = Termination.CACHED
                ex.write_stored(*hit)
                return None
        proxy = ex.snapshot.proxy
        return ex.run(
            _cached(ex, cache.handle(request, lambda r: fetch(proxy, r))), abandonable=True
        )


class Forward(Step):
    """Balance, attempt, retry; the answer relayed to the client while it is parsed."""

    __slots__ = ()
    name = "forward"
    abandonable = True

    def enter(self, ex: Exchange) -> Any:
        request = ex.request
        route = ex.route
        assert route is not None
        proxy = ex.snapshot.proxy
        if request.upgrade is None and route.compress is None:
            forwarding = Forwarding(proxy, request, ex)
            ex.forwarding = forwarding
            forwarding.start()
            return TAKEN
        # A protocol switch, or an answer to compress: through a response object.
        builder = ResponseBuilder(request.method == "HEAD")
        forwarding = Forwarding(proxy, request, builder)
        builder.forwarding = forwarding
        ex.forwarding = forwarding
        forwarding.start()
        return ex.run(_respond_built(ex, builder), abandonable=True)


class Dispatch(Step):
    """A request no route takes: a built-in endpoint, or 404."""

    __slots__ = ()
    name = "builtin"

    def enter(self, ex: Exchange) -> Any:
        return ex.flow.dispatch(ex)


ENTRY: tuple[Step, ...] = (ResolveClient(), IdentifyRequest(), MatchRoute())
PATH: tuple[Step, ...] = (
    AllowOrigin(),
    BoundBody(),
    DenyAddress(),
    Authenticate(),
    GateTier(),
    Limit(),
    WaitingRoom(),
    Geo(),
    Admit(),
    Cache(),
    Forward(),
)
BUILTIN: tuple[Step, ...] = (AllowOrigin(), Dispatch())


def plan_for(route: Route, snapshot: Snapshot) -> tuple[Step, ...]:
    """The steps of :data:`PATH` that requests of ``route`` go through."""
    return tuple(step for step in PATH if step.applies(route, snapshot))


def builtin_plan(snapshot: Snapshot) -> tuple[Step, ...]:
    """The steps of :data:`BUILTIN` for requests no route takes (CORS if configured)."""
    return BUILTIN if snapshot.cors is not None else BUILTIN[1:]


# -- helpers of the steps ------------------------------------------------------------------


async def _authenticate(
    guard: Any, ip: str, bearer: str | None, api_key: str | None
) -> tuple[Any, int]:
    """The guard's verdict and the admission priority of the principal's tier (the tier's
    ``priority``, cached like its policies for the identity cache's TTL; unknown: 0)."""
    verdict = await guard.check(ip, bearer=bearer, api_key=api_key)
    principal = verdict.principal
    if not verdict.allowed or principal is None or principal.via == "admin_token":
        return verdict, 0
    identity = guard.identity
    tier = principal.tier

    async def load() -> int:
        try:
            return int((await identity.tiers.get(tier)).priority)
        except GatekeeperError:
            return 0

    return verdict, int(await identity.cache.get_or_load("tier-priority", tier, load))


async def _queued(ex: Exchange, control: Any) -> Any:
    """Wait for a slot in the pool's queue; the controller, or the QueueFull that ended it."""
    try:
        await control.acquire(ex.priority)
    except QueueFull as exc:
        return exc
    return control


async def _cached(ex: Exchange, answer: Awaitable[ProxyResponse]) -> None:
    try:
        response = await answer
    except GatekeeperError as exc:
        ex.answer_error(exc)
        return
    await ex.respond(response)


async def _respond_built(ex: Exchange, builder: ResponseBuilder) -> None:
    try:
        response = await builder.future
    except GatekeeperError as exc:
        ex.forwarding = None
        ex.answer_error(exc)
        return
    await ex.respond(response)
