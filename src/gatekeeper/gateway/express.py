"""The express lane: the common proxied request served on callbacks alone.

Most requests a gateway carries are uneventful: no body or a small one (read whole before the
request starts, see ``SMALL_BODY`` in :mod:`~gatekeeper.gateway.protocol`), a route without
authentication, waiting room, cache or concurrency limit, an idle keep-alive connection to the
chosen endpoint, a response that arrives whole. The general pipeline
(:mod:`gatekeeper.gateway.pipeline`) serves every request through a chain of coroutines,
futures and response and body objects; the express lane serves the common one with callbacks
alone (10-15% less CPU per request, measured in docs/gateway-performance.md):

    head parsed -> route -> limiter batch (the decision's future calls back) -> balancer pick
    -> request head written on an idle upstream connection -> the response relayed while that
    connection parses it (head rewritten, body passed on, one write when it is whole)
    -> pool, metrics and access-line accounting

It implements the same rules as the pipeline, with the same helpers (header hygiene and
forwarding headers from :class:`~gatekeeper.gateway.proxy.Proxy`, RateLimit fields, problem
answers, pool accounting). Whatever leaves the common case is handed to the pipeline at the
step reached, so nothing is decided twice: a request the lane does not take goes in whole;
once its limits are decided, a retry, a failed attempt or no healthy endpoint goes on through
:meth:`GatewayState.resume <gatekeeper.gateway.pipeline.GatewayState.resume>` with the attempts
made so far.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import NoHealthyUpstream, UpstreamConnectError, UpstreamError
from gatekeeper.gateway.messages import Headers, ProxyRequest
from gatekeeper.gateway.protocol import EMPTY_BODY, status_line
from gatekeeper.gateway.proxy import Attempts
from gatekeeper.identity.blocklists import UNKNOWN
from gatekeeper.limits.headers import problem_body, rate_limit_headers
from gatekeeper.limits.policy import Check
from gatekeeper.observability.proxied import ensure_request_id

if TYPE_CHECKING:
    from gatekeeper.gateway.connections import UpstreamConnection
    from gatekeeper.gateway.pipeline import GatewayState
    from gatekeeper.gateway.protocol import HttpProtocol
    from gatekeeper.gateway.routing import Route
    from gatekeeper.limits.decision import Decision

__all__ = ["Exchange", "begin"]

logger = logging.getLogger("gatekeeper.gateway")

_NO_BODY_STATUS = frozenset({204, 304})
_CACHEABLE = frozenset({"GET", "HEAD"})
_NOT_HERE = frozenset({"deny", UNKNOWN})
_PROBLEM = (b"content-type", b"application/problem+json")
_TRAILER = b"0\r\n\r\n"


def begin(state: GatewayState, request: ProxyRequest, conn: HttpProtocol) -> bool:
    """Serve ``request`` on the express lane if it qualifies (True); False leaves it to
    :meth:`GatewayState.handle <gatekeeper.gateway.pipeline.GatewayState.handle>`."""
    if (request.body is not EMPTY_BODY and not request.body.complete) or request.upgrade:
        return False  # a streamed body, or a WebSocket handshake: the pipeline's
    trusted = state.trusted
    if trusted:
        request.client_ip = trusted.client_ip(request.peer_ip, request.header(b"x-forwarded-for"))
    route = state.router.match(request.host, request.path, request.method)
    if route is None:
        return state.begin_builtin(request, conn)  # the endpoint table answers it
    if (
        route.auth is not None
        or (route.waiting_room is not None and state.gate is not None)
        or route.compress is not None  # (the pipeline compresses)
    ):
        return False
    limit = route.max_body_bytes
    if limit is not None and request.body.received > limit:
        return False  # the pipeline answers 413
    guard = state.guard
    if guard is not None and guard.identity.ip_rules.match_now(request.client_ip) in _NOT_HERE:
        return False  # a denied address (the pipeline answers 403), or rules not in memory
    cached = route.cache is not None and state.cache is not None
    if cached and (request.method not in _CACHEABLE or route.response_headers is not None):
        # The cache forwards it (and invalidates what an unsafe method changes); a stored
        # answer whose fields a route rewrites is written by the pipeline.
        return False
    control = getattr(state.pools[route.upstream], "admission_control", None)
    if control is None or control.max_concurrency is not None:
        return False  # a concurrency limit queues requests: the pipeline's admission does
    request.route = route
    exchange = Exchange(state, request, conn, route)
    exchange.cached = cached
    conn.exchange = exchange
    exchange.start()
    return True


class Exchange:
    """One request on the express lane, from its limits to its last response byte.

    It is the upstream connection's response sink (``on_head``, ``on_body``, ``on_end``,
    ``on_flush``, ``on_error``) and the client connection's current exchange (``cancel`` when
    the client goes away, ``resume_reading`` when it drains).
    """

    __slots__ = (
        "attempt",
        "attempts",
        "cached",
        "chunked",
        "conn",
        "endpoint",
        "extra",
        "head",
        "note",
        "parts",
        "pool",
        "request",
        "reused",
        "route",
        "sent",
        "started",
        "state",
        "status",
        "upstream",
    )

    def __init__(
        self, state: GatewayState, request: ProxyRequest, conn: HttpProtocol, route: Route
    ) -> None:
        self.state = state
        self.request = request
        self.conn = conn
        self.route = route
        self.pool: Any = state.pools[route.upstream]
        self.started = time.monotonic()
        self.note: dict[str, Any] | None = None
        self.extra: Headers | None = None
        self.endpoint: Any = None
        self.upstream: UpstreamConnection | None = None
        self.head = b""
        self.parts: list[bytes] = []
        self.chunked = False
        self.status = 0
        self.attempt = 0
        self.attempts = 1
        self.reused = False
        self.sent = 0.0
        self.cached = False  # the route has a cache: a stored answer is looked for first

    # -- limits ------------------------------------------------------------------------------
    def start(self) -> None:
        state = self.state
        request = self.request
        route = self.route
        if state.access_log is not None:
            rid = ensure_request_id(request)
            self.note = {"rid": rid}
            self.extra = [(b"x-request-id", rid.encode("latin-1"))]
        limiter = state.limiter
        if not route.limits or limiter is None:
            self.forward()
            return
        future = limiter.decide(self._checks())
        future.add_done_callback(self._decided)

    def _checks(self) -> tuple[Check, ...]:
        # Per-IP and global limits depend on the client address only: one cached group of
        # checks per (route, address) instead of a check lookup per limit and request.
        state = self.state
        route = self.route
        request = self.request
        simple = state.groups_by_address(route)
        if simple is not None:
            group = simple.get(request.client_ip)
            if group is None:
                if len(simple) >= 65536:
                    simple.clear()
                group = simple[request.client_ip] = state.checks(route, request)
            return group
        return state.checks(route, request)

    def _decided(self, future: asyncio.Future[Decision]) -> None:
        conn = self.conn
        if conn.exchange is not self:  # the client went away meanwhile
            return
        state = self.state
        try:
            decision = future.result()
        except Exception as exc:  # a malformed limit group: answered 500, as by the pipeline
            conn.exchange = None
            conn.run(self.request, self._internal_error(exc))
            return
        if state.metrics is not None:
            state.count_decision(decision)
        note = self.note
        if note is not None:
            note["decision"] = decision
        extra = self.extra
        if not decision.allowed:
            request = self.request
            fields = rate_limit_headers(decision, policies=state.policies)
            headers = [*extra, *fields, _PROBLEM] if extra else [*fields, _PROBLEM]
            body = problem_body(decision, instance=request.path)
            try:
                conn.send_bytes(429, headers, body, request)
            except ConnectionError:
                conn.keep_alive = False
            self._done(429)
            return
        if self.route.ratelimit_headers:
            fields = rate_limit_headers(decision, policies=state.policies)
            self.extra = [*extra, *fields] if extra else fields
        self.forward()

    # -- the attempt -------------------------------------------------------------------------
    def forward(self) -> None:
        request = self.request
        if self.cached:
            cache = self.state.cache
            hit = cache.fresh_hit(request) if cache is not None else None
            if hit is None:
                self._resume()  # a miss, a stale entry, Vary, a shared store: the cache's way
            else:
                self._answer_stored(*hit)
            return
        route = self.route
        pool = self.pool
        proxy = self.state.proxy
        try:
            endpoint = pool.pick(request)
        except NoHealthyUpstream:
            self._resume()  # the pipeline answers 503 (and counts the attempt) the usual way
            return
        head, data, _ = proxy.prepare(request)  # (a body here is complete: replayable)
        if not route.preserve_host:
            head = proxy.with_host(head, endpoint)
        self.head = head + data if data else head
        retry = route.retry
        self.attempts = retry.attempts if request.method in retry.methods else 1
        self.attempt = 1
        self.endpoint = endpoint
        pool.on_start(endpoint)
        upstream = proxy.connections(endpoint).take_idle()
        if upstream is None:
            self._connect()
            return
        self.reused = True
        self._send(upstream)

    def _connect(self, *, fresh: bool = False) -> None:
        pool = self.state.proxy.connections(self.endpoint)
        connect = pool.acquire(self.route.timeouts.connect, fresh=fresh)
        task = self.conn.loop.create_task(connect)
        task.add_done_callback(self._connected)
        self.conn.detached = task  # (a strong reference while it runs)

    def _connected(self, task: asyncio.Task[UpstreamConnection]) -> None:
        if self.conn.exchange is not self:  # the client went away meanwhile
            if not task.cancelled() and task.exception() is None:
                task.result().pool.release(task.result())  # (a fresh connection: keep it)
            return
        self.conn.detached = None
        try:
            upstream = task.result()
        except asyncio.CancelledError:  # shutting down
            exc: UpstreamError = UpstreamConnectError("connecting was cancelled")
            self.reused = False
            self.sent = time.monotonic()
            self.on_error(exc, False)
            return
        except UpstreamError as exc:
            self.reused = False
            self.sent = time.monotonic()
            self.on_error(exc, False)
            return
        self.reused = False
        self._send(upstream)

    def _send(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream
        self.sent = time.monotonic()
        timeouts = self.route.timeouts
        upstream.relay(
            self.head,
            self,
            head_only=self.request.method == "HEAD",
            read_timeout=timeouts.read,
            total_timeout=timeouts.total,
            interim=self.request.on_interim,
        )

    def _answer_stored(self, status: int, lines: bytes, body: bytes, length: int | None) -> None:
        """Write a cache hit (see ``GatewayCache.fresh_hit``) as the pipeline would."""
        conn = self.conn
        conn.response_started = True
        parts = [status_line(status), lines]
        extra = self.extra
        if extra:
            for name, value in extra:
                parts += (name, b": ", value, b"\r\n")
        if length is not None and status not in _NO_BODY_STATUS:
            parts.append(b"content-length: %d\r\n" % length)
        parts += (conn.connection_header(self.request.version == "1.0"), b"\r\n", body)
        transport = conn.transport
        if transport is not None and not conn.closed:
            transport.write(b"".join(parts))
        self._done(status)

    # -- the upstream connection's sink ------------------------------------------------------
    def on_head(
        self, status: int, reason: bytes, headers: Headers, length: int | None, chunked: bool
    ) -> bool:
        """The response head arrived; False: it is discarded (the attempt will be retried)."""
        request = self.request
        if self.state.proxy.answered(
            request, self.pool, self.endpoint, status, self.sent, self.attempt, self.attempts
        ):
            self.upstream = None
            self._resume(resumed=Attempts(self.attempt, {self.endpoint}))
            return False
        conn = self.conn
        conn.response_started = True
        self.status = status
        rules = self.route.response_headers
        if rules is not None:
            headers = rules.apply(headers)
        parts = self.parts
        parts.append(status_line(status, reason))
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        extra = self.extra
        if extra:
            for name, value in extra:
                parts += (name, b": ", value, b"\r\n")
        version_10 = request.version == "1.0"
        if status in _NO_BODY_STATUS:
            pass
        elif request.method == "HEAD":
            if length is not None:
                parts.append(b"content-length: %d\r\n" % length)
        elif length is not None:
            parts.append(b"content-length: %d\r\n" % length)
        elif version_10:
            conn.keep_alive = False  # HTTP/1.0: the body ends when the connection closes
        else:
            self.chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        parts += (conn.connection_header(version_10), b"\r\n")
        return True

    def on_body(self, data: bytes) -> None:
        if self.chunked:
            self.parts.append(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.parts.append(data)

    def on_flush(self) -> None:
        """The end of one read from the upstream: pass on what it brought."""
        parts = self.parts
        if parts:
            conn = self.conn
            transport = conn.transport
            if transport is None or conn.closed:
                return
            transport.write(b"".join(parts))
            parts.clear()
            if conn.write_paused and self.upstream is not None:
                self.upstream.pause_reading()  # resumed by resume_reading when the client drains

    def on_end(self) -> None:
        """The response is complete (the upstream connection is released already)."""
        self.upstream = None
        parts = self.parts
        if self.chunked:
            parts.append(_TRAILER)
        conn = self.conn
        transport = conn.transport
        if parts and transport is not None and not conn.closed:
            transport.write(b"".join(parts))
        self._done(self.status)

    def on_error(self, exc: UpstreamError, head_seen: bool) -> None:
        """The attempt failed (timeout, connection lost, bad HTTP)."""
        self.upstream = None
        conn = self.conn
        if head_seen:
            # The status line is gone: the only honest signal left is to cut the connection
            # (the client sees a truncated body).
            logger.warning("upstream failed while relaying a response body: %s", exc)
            conn.keep_alive = False
            if conn.transport is not None:
                conn.transport.abort()
            self._done(self.status)
            return
        if self.reused and isinstance(exc, UpstreamConnectError):
            # A reused connection the upstream closed while idle: nothing of the response was
            # seen, so the same attempt goes again on a fresh connection to the same endpoint
            # (judging nothing, and without a second pick: that would count the request twice
            # in the retry budget).
            self.reused = False
            self._connect(fresh=True)
            return
        elapsed = time.monotonic() - self.sent
        retry = self.state.proxy.failed(
            self.request, self.pool, self.endpoint, exc, elapsed, self.attempt, self.attempts
        )
        if retry:
            self._resume(resumed=Attempts(self.attempt, {self.endpoint}, exc))
        else:
            self._resume(error=exc)

    # -- the client connection's side --------------------------------------------------------
    def cancel(self) -> None:
        """The client went away: abandon the attempt (judging nothing) and account it."""
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.abandon()
        if self.endpoint is not None and not self.status:
            self.pool.on_cancel(self.endpoint)  # an attempt under way (connecting, or waiting)
        self.conn.exchange = None
        self.state.account(
            self.conn.loop, self.request, self.route, self.status, self.started, self.note
        )

    def resume_reading(self) -> None:
        """The client drained what was written: read from the upstream again."""
        if self.upstream is not None:
            self.upstream.resume_reading()

    # -- endings -----------------------------------------------------------------------------
    def _done(self, status: int) -> None:
        conn = self.conn
        conn.exchange = None
        self.state.account(
            self.conn.loop, self.request, self.route, status, self.started, self.note
        )
        conn.finish(self.request)

    def _resume(
        self, *, resumed: Attempts | None = None, error: UpstreamError | None = None
    ) -> None:
        """Hand the request to the pipeline (retries, error answers, no healthy endpoint)."""
        conn = self.conn
        conn.exchange = None
        work = self.state.resume(
            self.request,
            conn,
            self.started,
            self.note,
            self.extra,
            resumed=resumed,
            error=error,
        )
        conn.run(self.request, work)

    async def _internal_error(self, exc: Exception) -> None:
        # Raised where the connection's worker answers unexpected errors (500, logged).
        try:
            raise exc
        finally:
            self.state.account(
                self.conn.loop, self.request, self.route, 500, self.started, self.note
            )
