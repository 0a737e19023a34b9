"""One request's way to an upstream answer: pick, connect, send, retry, on callbacks.

A :class:`Forwarding` is the upstream connection's :class:`~.connections.ResponseSink` for the
attempts of one request, and hands what is worth passing on to its own sink (the consumer):

    pick an endpoint (the pool's balancer; NoHealthyUpstream if none may take it)
    -> an idle keep-alive connection, or a new one (connecting is the only task)
    -> write the request (a streamed body follows in a task of its own)
    -> the response head: a retryable status within the retry budget is discarded and the
       request goes to another endpoint; else the consumer gets the head, the body, the end
    -> a failure before the head: a kept-alive connection the upstream had closed is retried
       once on a fresh connection to the SAME endpoint (nothing was seen, nothing is judged);
       other failures are judged, and retried on another endpoint when the route allows it
       and the budget has room; else the consumer is told the request failed.

That is the retry loop of the gateway, written once. Two consumers exist: the client
connection itself (the common request: the answer is relayed while it is parsed) and
:class:`ResponseBuilder`, which makes a :class:`~gatekeeper.gateway.http.messages.ProxyResponse`
for what needs a whole response object (the cache, compression, a protocol switch).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

from gatekeeper.errors import (
    BodyTooLarge,
    NoHealthyUpstream,
    UpstreamConnectError,
    UpstreamError,
)
from gatekeeper.gateway.http.messages import Body, ProxyRequest, ProxyResponse

if TYPE_CHECKING:
    from gatekeeper.gateway.upstream.connections import UpstreamConnection
    from gatekeeper.gateway.upstream.proxy import Proxy

__all__ = ["Consumer", "Forwarding", "ResponseBuilder"]

Headers = list[tuple[bytes, bytes]]
_NOTHING: frozenset[Any] = frozenset()


class Consumer(Protocol):
    """Who gets the answer a :class:`Forwarding` obtained."""

    def on_head(
        self, status: int, reason: bytes, headers: Headers, length: int | None, chunked: bool
    ) -> bool:
        """The final head (after any retries); False abandons the response."""
        ...

    def on_body(self, data: bytes) -> None: ...

    def on_flush(self) -> None: ...

    def on_end(self) -> None: ...

    def on_broken(self, exc: UpstreamError) -> None:
        """The upstream failed after the head was passed on (the body is cut)."""
        ...

    def on_failed(self, exc: Exception) -> None:
        """No answer can be had (no endpoint, every attempt failed, the body was too large)."""
        ...

    def on_switched(self, reason: bytes, headers: Headers, upstream: UpstreamConnection) -> None:
        """A 101 answered a protocol switch: ``upstream`` now carries the new protocol."""
        ...


class Forwarding:
    """The attempts of one request; see the module docstring. ``start()`` begins them."""

    __slots__ = (
        "attempt",
        "attempts",
        "cancelled",
        "consumer",
        "data",
        "endpoint",
        "exclude",
        "head",
        "head_passed",
        "last_error",
        "loop",
        "pending",
        "pool",
        "proxy",
        "request",
        "reused",
        "sent",
        "streaming",
        "task",
        "upstream",
    )

    def __init__(self, proxy: Proxy, request: ProxyRequest, consumer: Consumer) -> None:
        route = request.route
        self.proxy = proxy
        self.request = request
        self.consumer = consumer
        self.pool: Any = proxy.pools[route.upstream]
        head, data, replayable = proxy.prepare(request)
        self.head = head
        self.data = data
        self.streaming = not replayable
        retry = route.retry
        self.attempts = retry.attempts if replayable and request.method in retry.methods else 1
        self.attempt = 0
        self.exclude: set[Any] | None = None
        self.last_error: UpstreamError | None = None
        self.endpoint: Any = None
        self.upstream: UpstreamConnection | None = None
        self.reused = False
        self.sent = 0.0
        self.pending = False  # an attempt is under way and not judged yet
        self.head_passed = False  # the consumer has the head: no answer of ours can follow
        self.cancelled = False
        self.task: asyncio.Task[Any] | None = None
        self.loop = asyncio.get_running_loop()

    # -- the attempts -----------------------------------------------------------------------
    def start(self) -> None:
        """Make the next attempt: pick, then send on an idle connection or connect."""
        request = self.request
        exclude = self.exclude
        try:
            endpoint = self.pool.pick(request, exclude if exclude else _NOTHING)
        except NoHealthyUpstream as exc:
            # A retry with no endpoint left answers the failure that made it retry (as nginx
            # answers its last failure); a first attempt answers "no healthy upstream".
            failure: Exception = self.last_error if self.last_error is not None else exc
            self.last_error = None
            self.consumer.on_failed(failure)
            return
        self.attempt += 1
        self.last_error = None
        self.endpoint = endpoint
        self.pending = True
        self.pool.on_start(endpoint)
        upstream = self.proxy.connections(endpoint).take_idle()
        if upstream is None:
            self._connect(fresh=False)
            return
        self.reused = True
        self._send(upstream)

    def _connect(self, *, fresh: bool) -> None:
        self.reused = False
        pool = self.proxy.connections(self.endpoint)
        task = self.loop.create_task(pool.acquire(self.request.route.timeouts.connect, fresh=fresh))
        task.add_done_callback(self._connected)
        self.task = task

    def _connected(self, task: asyncio.Task[UpstreamConnection]) -> None:
        self.task = None
        if self.cancelled:
            if not task.cancelled() and task.exception() is None:
                upstream = task.result()
                upstream.pool.release(upstream)  # a fresh connection: keep it for others
            return
        try:
            upstream = task.result()
        except asyncio.CancelledError:  # shutting down
            self.sent = time.monotonic()
            self.on_error(UpstreamConnectError("connecting was cancelled"), False)
            return
        except UpstreamError as exc:
            self.sent = time.monotonic()
            self.on_error(exc, False)
            return
        self._send(upstream)

    def _send(self, upstream: UpstreamConnection) -> None:
        request = self.request
        route = request.route
        self.upstream = upstream
        self.sent = time.monotonic()
        head = self.head if route.preserve_host else self.proxy.with_host(self.head, self.endpoint)
        timeouts = route.timeouts
        upstream.relay(
            head + self.data if self.data else head,
            self,
            head_only=request.method == "HEAD",
            read_timeout=timeouts.read,
            total_timeout=timeouts.total,
            interim=request.on_interim,
            streaming=self.streaming,
            upgrade=request.upgrade is not None,
        )
        if self.streaming:
            self.task = self.loop.create_task(self._send_body(upstream))

    async def _send_body(self, upstream: UpstreamConnection) -> None:
        """Stream the request body; the connection is reused only if all of it got through."""
        body = self.request.body
        chunked = body.length is None
        try:
            while chunk := await body.read():
                await upstream.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                await upstream.write(b"0\r\n\r\n")
        except BodyTooLarge as exc:
            if self.head_passed:
                upstream.abort()  # the upstream answered early; its connection is not reused
                return
            # The client's fault: 413, and the endpoint is not judged.
            self._abandon_attempt()
            self.consumer.on_failed(exc)
            return
        except (ConnectionError, UpstreamError):
            # The client's body did not arrive whole, or the upstream stopped taking it: the
            # connection cannot carry another request (its sink hears of it if the answer is
            # still under way).
            upstream.abort()
            return
        finally:
            if self.task is asyncio.current_task():
                self.task = None
        upstream.request_complete()

    def _abandon_attempt(self) -> None:
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.abandon()
        if self.pending:
            self.pending = False
            self.pool.on_cancel(self.endpoint)  # give back the in-flight slot, judge nothing

    # -- the upstream connection's sink -----------------------------------------------------
    def on_head(
        self, status: int, reason: bytes, headers: Headers, length: int | None, chunked: bool
    ) -> bool:
        self.pending = False
        if self.proxy.answered(
            self.request, self.pool, self.endpoint, status, self.sent, self.attempt, self.attempts
        ):
            self._retry_elsewhere(None)
            return False
        self.head_passed = True
        return self.consumer.on_head(status, reason, headers, length, chunked)

    def on_body(self, data: bytes) -> None:
        self.consumer.on_body(data)

    def on_flush(self) -> None:
        self.consumer.on_flush()

    def on_end(self) -> None:
        self.upstream = None
        self.consumer.on_end()

    def on_switched(self, reason: bytes, headers: Headers) -> None:
        upstream = self.upstream
        assert upstream is not None
        self.upstream = None
        self.pending = False
        self.proxy.answered(
            self.request, self.pool, self.endpoint, 101, self.sent, self.attempt, self.attempts
        )
        self.head_passed = True
        self.consumer.on_switched(reason, headers, upstream)

    def on_error(self, exc: UpstreamError, head_seen: bool) -> None:
        self.upstream = None
        if head_seen:
            self.consumer.on_broken(exc)
            return
        if self.reused and isinstance(exc, UpstreamConnectError) and not self.streaming:
            # A kept-alive connection the upstream closed while idle: nothing of the answer
            # was seen, so the same attempt goes again on a fresh connection to the same
            # endpoint (judging nothing, and without a second pick: that would count the
            # request twice in the retry budget).
            self._connect(fresh=True)
            return
        self.pending = False
        elapsed = time.monotonic() - self.sent
        if self.proxy.failed(
            self.request, self.pool, self.endpoint, exc, elapsed, self.attempt, self.attempts
        ):
            self._retry_elsewhere(exc)
        else:
            self.consumer.on_failed(exc)

    def _retry_elsewhere(self, exc: UpstreamError | None) -> None:
        exclude = self.exclude
        if exclude is None:
            exclude = self.exclude = set()
        exclude.add(self.endpoint)
        self.upstream = None
        self.last_error = exc
        # On the next loop turn: the connection that answered is still unwinding this call.
        self.loop.call_soon(self._next_attempt)

    def _next_attempt(self) -> None:
        if not self.cancelled:
            self.start()

    # -- the consumer's side ----------------------------------------------------------------
    def cancel(self) -> None:
        """The client went away: abandon the attempt under way, judging nothing."""
        self.cancelled = True
        self._abandon_attempt()
        task = self.task
        if task is not None:
            self.task = None
            task.cancel()

    def pause_reading(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_reading(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()


class ResponseBuilder:
    """A consumer that makes the answer a :class:`ProxyResponse` whose body streams from the
    upstream with backpressure (its reading pauses while the body is not consumed)."""

    __slots__ = ("body", "forwarding", "future", "head_only")

    def __init__(self, head_only: bool) -> None:
        self.future: asyncio.Future[ProxyResponse] = asyncio.get_running_loop().create_future()
        self.body: Body | None = None
        self.head_only = head_only
        self.forwarding: Forwarding | None = None

    def on_head(
        self, status: int, reason: bytes, headers: Headers, length: int | None, chunked: bool
    ) -> bool:
        if self.future.done():  # the awaiting side gave up
            return False
        if self.head_only or length == 0 or (length is None and status in (204, 304)):
            body = Body(length if self.head_only else None)
            if length == 0:
                body = Body.of(b"")
            body.feed_eof()
        else:
            body = Body(length)
            forwarding = self.forwarding
            if forwarding is not None:
                body.set_flow_control(forwarding.pause_reading, forwarding.resume_reading)
        self.body = body
        forwarding = self.forwarding
        upstream = forwarding.upstream if forwarding is not None else None
        address = upstream.pool.address if upstream is not None else ""
        self.future.set_result(
            ProxyResponse(status, headers, body, reason=reason, upstream=address)
        )
        return True

    def on_body(self, data: bytes) -> None:
        if self.body is not None:
            self.body.feed(data)

    def on_flush(self) -> None:
        pass

    def on_end(self) -> None:
        if self.body is not None:
            self.body.feed_eof()

    def on_broken(self, exc: UpstreamError) -> None:
        if self.body is not None:
            self.body.set_exception(exc)

    def on_failed(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def on_switched(self, reason: bytes, headers: Headers, upstream: UpstreamConnection) -> None:
        if self.future.done():
            upstream.abort()
            return
        response = ProxyResponse(
            101, headers, Body.of(b""), reason=reason, upstream=upstream.pool.address
        )
        response.switched = upstream
        self.future.set_result(response)


async def fetch(proxy: Proxy, request: ProxyRequest) -> ProxyResponse:
    """The upstream's answer to ``request`` as a response object (attempts and retries as
    for every request); raises the :class:`~gatekeeper.errors.UpstreamError` that ended it."""
    builder = ResponseBuilder(request.method == "HEAD")
    forwarding = Forwarding(proxy, request, builder)
    builder.forwarding = forwarding
    forwarding.start()
    try:
        return await builder.future
    except asyncio.CancelledError:
        forwarding.cancel()
        raise
