"""One request, from its parsed head to its last response byte: the steps run two ways.

An :class:`Exchange` walks its plan (the ordered steps of :mod:`.steps` that apply to its route)
one :class:`Step` at a time. A step answers at once (``enter`` returns ``None``: go on), takes
the request over (``TAKEN``: it settles the exchange itself, e.g. forwarding, whose answer
arrives through callbacks), or must wait (it returns an awaitable, and ``resume`` gets its
value). The common request runs every step as a plain call on the loop's callbacks: a wait on a
future (the limiter's batch) continues in the future's callback. A wait on anything else (a SQL
lookup, a queue slot, the cache) continues the same steps in a task. One implementation, run two
ways; httpcore generates its sync code from its async code for the same reason.

The exchange is also the consumer of its forwarding (:mod:`..upstream.forward`): the answer is
relayed to the client while the upstream connection parses it (head rewritten, body passed on,
one write per read), so the common answer needs no response or body objects either.

Every way out goes through :meth:`Exchange.settle`: accounting (metrics, access line), the
concurrency lease and the queue slot given back, the connection told it may read the next
request. A client that goes away cancels the exchange (the upstream attempt is abandoned and
judged nothing; the request is accounted as 499).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from gatekeeper import problem
from gatekeeper.errors import (
    BodyTooLarge,
    NoHealthyUpstream,
    QueueFull,
    UpstreamError,
    UpstreamTimeout,
)
from gatekeeper.gateway.http.writer import NO_BODY_STATUS, Framing
from gatekeeper.observability.access import Termination
from gatekeeper.observability.unexpected import report_unexpected

if TYPE_CHECKING:
    from gatekeeper.gateway.flow.routing import Route
    from gatekeeper.gateway.flow.snapshot import Snapshot
    from gatekeeper.gateway.http.messages import ProxyRequest, ProxyResponse
    from gatekeeper.gateway.http.protocol import HttpProtocol
    from gatekeeper.gateway.upstream.connections import UpstreamConnection
    from gatekeeper.gateway.upstream.forward import Forwarding
    from gatekeeper.limits.decision import Decision
    from gatekeeper.limits.policy import Check

__all__ = ["TAKEN", "Exchange", "Ledger", "Services", "Step"]

Headers = list[tuple[bytes, bytes]]

TAKEN: Any = object()
"""What a step's ``enter`` returns when it took the request over and will settle it itself."""

_Future = asyncio.Future
_PROBLEM = (b"content-type", problem.CONTENT_TYPE)
_TRAILER = b"0\r\n\r\n"
_CHUNKED = Framing.CHUNKED
# How the upstream errors that end a request are written in its access line.
_TERMS: tuple[tuple[type[Exception], Termination], ...] = (
    (UpstreamTimeout, Termination.UPSTREAM_TIMEOUT),
    (NoHealthyUpstream, Termination.NO_UPSTREAM),
    (QueueFull, Termination.QUEUE_FULL),
    (UpstreamError, Termination.UPSTREAM_ERROR),
)


class Ledger(Protocol):
    """Where answered requests are accounted (``accounting.Accounting``)."""

    def answered(self, loop: asyncio.AbstractEventLoop, exchange: Exchange, status: int) -> None:
        """Account ``exchange``, answered with ``status``."""
        ...

    def decided(self, decision: Decision) -> None:
        """Count the limiter's verdict."""
        ...


class Services(Protocol):
    """What an exchange asks of the flow that serves it (``flow.Flow``)."""

    log: logging.Logger

    @property
    def accounting(self) -> Ledger:
        """The flow's accounting."""
        ...

    def release_lease(
        self, lease: tuple[tuple[Check, ...], str], decision: Decision | None
    ) -> None:
        """Give back a concurrency lease."""
        ...

    def dispatch(self, ex: Exchange) -> Any:
        """Answer a request no route takes (a step's ``enter`` result)."""
        ...


class Step:
    """One step of the request path (see :mod:`.steps` for the list, in order)."""

    __slots__ = ()
    name: ClassVar[str] = "step"
    # Whether a client that goes away while this step waits cancels the wait (a queue slot, a
    # cache fill, an upstream answer); the others end at the next step (a SQL lookup).
    abandonable: ClassVar[bool] = False

    def applies(self, route: Route, snapshot: Snapshot) -> bool:
        """Whether requests of ``route`` go through this step (decided once per config)."""
        return True

    def enter(self, ex: Exchange) -> Any:
        """Do the step: ``None`` (done, go on), ``TAKEN``, or an awaitable to wait for."""
        raise NotImplementedError

    def resume(self, ex: Exchange, value: Any) -> None:
        """Finish the step with what its awaitable gave."""
        raise NotImplementedError

    def discard(self, ex: Exchange, value: Any) -> None:
        """The awaitable gave ``value`` after the exchange ended (its client went away):
        give back what it holds, if anything (a lease, a queue slot)."""


class Exchange:
    """One request through the gateway (see the module docstring)."""

    __slots__ = (
        "abandonable",
        "chunked",
        "conn",
        "decision",
        "extra",
        "flow",
        "forwarding",
        "index",
        "lease",
        "limit_fields",
        "parts",
        "plan",
        "principal",
        "priority",
        "request",
        "rid",
        "route",
        "settled",
        "slot",
        "snapshot",
        "started",
        "status",
        "task",
        "term",
        "waiting",
    )

    def __init__(
        self,
        flow: Services,
        snapshot: Snapshot,
        plan: tuple[Step, ...],
        request: ProxyRequest,
        conn: HttpProtocol,
    ) -> None:
        self.flow = flow
        self.snapshot = snapshot
        self.request = request
        self.conn = conn
        self.started = conn.loop.time()
        self.plan = plan
        self.index = 0
        self.route: Route | None = None
        self.rid = ""
        # Fields the answer carries whatever it is (the request id, CORS), and the rate-limit
        # fields of the decision that admitted it (the route's replace the tier's): see fields().
        self.extra: Headers | None = None
        self.limit_fields: Headers | None = None
        self.decision: Decision | None = None
        self.term: Termination | None = None
        self.priority = 0
        self.principal: Any = None  # who the identity guard authenticated, if it ran
        self.status = 0
        self.settled = False
        self.waiting: Step | None = None
        self.task: asyncio.Task[None] | None = None
        self.abandonable = False  # a waiting task may be cancelled if the client goes away
        self.forwarding: Forwarding | None = None
        self.lease: tuple[tuple[Check, ...], str] | None = None
        self.slot: Any = None  # the admission controller whose slot this request holds
        self.parts: list[bytes] = []
        self.chunked = False

    # -- the runner: callbacks first, a task once a step must wait on a coroutine -------------
    def proceed(self) -> None:
        """Run the plan on callbacks until it ends, is taken over, or must wait."""
        try:
            waiting = self._advance()
        except Exception as exc:
            self.fail(exc)
            return
        if waiting is None:
            return
        step, wait = waiting
        if isinstance(wait, _Future):
            self.waiting = step
            wait.add_done_callback(self._resumed)
        else:
            self._detach(step, wait)

    def _advance(self) -> tuple[Step, Any] | None:
        """Run steps while they answer at once; the step that must wait and what it waits
        for, or None once the exchange is settled or taken over."""
        while not self.settled:
            step = self.plan[self.index]
            self.index += 1
            wait = step.enter(self)
            if wait is None:
                continue
            if wait is TAKEN:
                return None
            if isinstance(wait, _Future) and wait.done():
                step.resume(self, wait.result())
                continue
            return step, wait
        return None

    def _resumed(self, future: asyncio.Future[Any]) -> None:
        step = self.waiting
        assert step is not None
        self.waiting = None
        try:
            if self.settled:  # the client went away meanwhile
                if not future.cancelled() and future.exception() is None:
                    step.discard(self, future.result())
                return
            step.resume(self, future.result())
        except Exception as exc:
            self.fail(exc)
            return
        self.proceed()

    def _detach(self, step: Step, wait: Awaitable[Any]) -> None:
        self.abandonable = step.abandonable
        self.task = self.conn.loop.create_task(self._proceed_async(step, wait))

    async def _proceed_async(self, step: Step, wait: Awaitable[Any]) -> None:
        """The same steps, from a step that waits, in a task."""
        try:
            while True:
                value = await wait
                self.abandonable = False
                if self.settled:
                    step.discard(self, value)
                    return
                step.resume(self, value)
                waiting = self._advance()
                if waiting is None:
                    return
                step, wait = waiting
                self.abandonable = step.abandonable
        except asyncio.CancelledError:
            if not self.settled:
                self.settle(499)
            raise
        except ConnectionError:
            self.conn.keep_alive = False
            self.settle(self.status or 499)
        except Exception as exc:
            self.fail(exc)
        finally:
            if self.task is asyncio.current_task():
                self.task = None

    def run(self, work: Coroutine[Any, Any, None], *, abandonable: bool = False) -> Any:
        """Take the request over with ``work`` in a task (a step's way to answer later);
        ``abandonable``: a client that goes away cancels it. Returns ``TAKEN``."""
        self.abandonable = abandonable
        self.task = self.conn.loop.create_task(self._guarded(work))
        return TAKEN

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            if not self.settled:
                self.settle(499)
            raise
        except ConnectionError:
            self.conn.keep_alive = False
            self.settle(self.status or 499)
        except Exception as exc:
            self.fail(exc)
        finally:
            if self.task is asyncio.current_task():
                self.task = None

    # -- answers the gateway gives itself ---------------------------------------------------
    def fields(self) -> Headers | None:
        """What every answer to this request carries besides its own fields: the request id,
        CORS, the rate-limit fields, the response timing (one place, for every way out)."""
        extra = self.extra
        limit = self.limit_fields
        if limit:
            extra = [*extra, *limit] if extra else limit
        route = self.route
        if route is not None and route.timing:
            extra = [*(extra or ()), *self._timing()]
        return extra

    def _timing(self) -> Headers:
        """X-Response-Time and Server-Timing: the time to the answer's head, and the
        upstream's share of it when it answered."""
        now = self.conn.loop.time()
        total = (now - self.started) * 1000
        timing = b"gatekeeper;dur=%.1f" % total
        forwarding = self.forwarding
        if forwarding is not None and forwarding.sent:
            upstream = (time.monotonic() - forwarding.sent) * 1000
            timing += b", upstream;dur=%.1f" % upstream
        return [(b"x-response-time", b"%.1fms" % total), (b"server-timing", timing)]

    def answer(self, status: int, headers: Headers, body: bytes) -> None:
        """Answer now with a complete body (the exchange's extra fields added) and settle."""
        conn = self.conn
        try:
            conn.send_bytes(status, headers, body, self.request, self.fields())
        except ConnectionError:
            conn.keep_alive = False
        self.settle(status)

    def answer_problem(
        self, status: int, error: str, detail: str, headers: Headers | None = None, **extra: Any
    ) -> None:
        """Answer with a problem document (see :mod:`gatekeeper.problem`) and settle."""
        body = problem.problem_body(status, error, detail, **extra)
        self.answer(status, [*headers, _PROBLEM] if headers else [_PROBLEM], body)

    def answer_error(self, exc: Exception) -> None:
        """Answer the exception that ended the request (its status from
        :func:`gatekeeper.problem.status_of`), or cut the connection if the answer began."""
        status, code = problem.status_of(exc)
        if self.term is None:
            for kind, term in _TERMS:
                if isinstance(exc, kind):
                    self.term = term
                    break
        if self.conn.response_started:
            self.cut(status)
            return
        if status == 500:
            self.fail(exc)
            return
        headers: Headers | None = None
        if isinstance(exc, QueueFull):
            headers = [(b"retry-after", str(exc.retry_after).encode())]
        self.answer_problem(status, code, str(exc), headers)

    def fail(self, exc: BaseException) -> None:
        """An unexpected error: one log line (see observability/unexpected.py), one 500."""
        report_unexpected(exc, request_id=self.rid, where=self._where())
        self.term = Termination.INTERNAL
        if self.settled:
            return
        if self.conn.response_started or self.conn.closed:
            self.cut(500)
            return
        self.conn.keep_alive = False
        self.answer_problem(500, "internal_error", "an unexpected error occurred; it was logged")

    def cut(self, status: int) -> None:
        """The answer began and cannot be completed: the only honest signal left is to cut
        the connection (the client sees a truncated body)."""
        conn = self.conn
        conn.keep_alive = False
        if conn.transport is not None:
            conn.transport.abort()
        self.settle(self.status or status)

    def _where(self) -> str:
        request = self.request
        route = self.route
        return f"{request.method} {request.path}" + (f" (route {route.name})" if route else "")

    # -- the end ---------------------------------------------------------------------------
    def settle(self, status: int) -> None:
        """The request is over (``status`` 0 or 499: never answered): account it, give back
        what it held, and let the connection read the next request."""
        if self.settled:
            return
        self.settled = True
        self.status = status
        conn = self.conn
        if conn.exchange is self:
            conn.exchange = None
        flow = self.flow
        slot = self.slot
        if slot is not None:
            self.slot = None
            slot.release()
        lease = self.lease
        if lease is not None:
            self.lease = None
            flow.release_lease(lease, self.decision)
        flow.accounting.answered(conn.loop, self, status)
        conn.finish(self.request)

    def cancel(self) -> None:
        """The client went away: abandon the request where it stands."""
        forwarding = self.forwarding
        if forwarding is not None:
            self.forwarding = None
            forwarding.cancel()
        task = self.task
        if task is not None and self.abandonable:
            task.cancel()  # (its CancelledError settles the exchange)
            return
        if self.term is None and not self.status:
            self.term = Termination.CLIENT_ABORT
        self.settle(self.status or 499)

    def limited_subject(self) -> str | None:
        """The subject the denying policy counted, as the access line shows it."""
        decision = self.decision
        route = self.route
        if decision is None or decision.allowed or route is None:
            return None
        from gatekeeper.gateway.flow.subjects import shown_subject

        return shown_subject(route, self.request, decision.policy)

    # -- the forwarding's consumer: the answer relayed to the client as it is parsed ---------
    def on_head(
        self, status: int, reason: bytes, headers: Headers, length: int | None, chunked: bool
    ) -> bool:
        """The upstream's final head: rewritten and queued for the next write."""
        self.status = status
        route = self.route
        assert route is not None
        rules = route.response_headers
        if rules is not None:
            headers = rules.apply(headers)
        head, mode = self.conn.response_head(
            self.request, status, headers, self.fields(), length, reason=reason
        )
        self.parts.append(head)
        self.chunked = mode is _CHUNKED
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
            if conn.write_paused and self.forwarding is not None:
                self.forwarding.pause_reading()  # resumed by resume_reading when it drains

    def on_end(self) -> None:
        """The answer is complete (the upstream connection is released already)."""
        self.forwarding = None
        parts = self.parts
        if self.chunked:
            parts.append(_TRAILER)
        conn = self.conn
        transport = conn.transport
        if parts and transport is not None and not conn.closed:
            transport.write(b"".join(parts))
            parts.clear()
        self.settle(self.status)

    def on_broken(self, exc: UpstreamError) -> None:
        """The upstream failed while its body was relayed."""
        self.forwarding = None
        self.flow.log.warning("upstream failed while relaying a response body: %s", exc)
        self.term = Termination.UPSTREAM_ERROR
        self.cut(self.status)

    def on_failed(self, exc: Exception) -> None:
        """No answer could be had from upstream: answer the failure."""
        self.forwarding = None
        if isinstance(exc, BodyTooLarge):
            self.conn.keep_alive = False
        self.flow.log.info("%s %s -> %s", self.request.method, self.request.path, exc)
        self.answer_error(exc)

    def on_switched(self, reason: bytes, headers: Headers, upstream: UpstreamConnection) -> None:
        raise AssertionError("protocol switches are forwarded through a response object")

    def resume_reading(self) -> None:
        """The client drained what was written: read from the upstream again."""
        if self.forwarding is not None:
            self.forwarding.resume_reading()

    # -- an answer as a response object (the cache, compression, a protocol switch) ---------
    async def respond(self, response: ProxyResponse) -> None:
        """Write ``response`` (header rules, compression and a protocol switch applied)."""
        route = self.route
        assert route is not None
        self.status = response.status
        rules = route.response_headers
        if rules is not None:
            response.headers = rules.apply(response.headers)
        if response.switched is not None:
            self.conn.switch(response, self.fields())  # a WebSocket: the connections are joined
            self.settle(101)
            return
        compress = route.compress
        if compress is not None:
            from gatekeeper.gateway.flow.compression import compress_response

            response = compress_response(compress, self.request, response)
        await self.conn.send_response(response, self.request, self.fields())
        self.settle(response.status)

    def write_stored(self, status: int, lines: bytes, body: bytes, length: int | None) -> None:
        """Answer a cache hit from its pre-encoded fields (see ``GatewayCache.fresh_hit``)."""
        conn = self.conn
        if status in NO_BODY_STATUS:
            length = None
        elif length is None and self.request.method != "HEAD":
            length = len(body)
        head, _ = conn.response_head(self.request, status, [], self.fields(), length, lines=lines)
        transport = conn.transport
        if transport is not None and not conn.closed:
            transport.write(head + body)
        self.settle(status)
