"""The client side of the listener: one ``asyncio.Protocol`` per connection, httptools parsing.

Each request becomes a :class:`~gatekeeper.gateway.http.messages.ProxyRequest` as soon as its
head is parsed; its body keeps arriving through :class:`~gatekeeper.gateway.http.messages.Body`
(reading is paused when the handler falls behind). Requests on one connection are answered in
order: a pipelined request waits (with reading paused) until the previous response is written.

Protocol upgrades (RFC 9110 7.8): a WebSocket handshake (``GET`` without a body, HTTP/1.1,
``Connection: upgrade``, ``Upgrade: websocket``) is served like any request, limits and all;
if the upstream answers 101, :meth:`HttpProtocol.switch` joins the two connections in a
:class:`~gatekeeper.gateway.http.tunnel.Tunnel`. Other upgrades without a body are ignored (the
request is served over HTTP/1.1, as the RFC allows); ``CONNECT`` and upgrades with a body are
refused with 501.

The protocol is also the response writer the pipeline and the ASGI bridge use: ``write_head``,
``write``, ``drain`` and :meth:`send_response`, which frames a body by Content-Length when it is
known or complete and by chunked encoding otherwise (close-delimited for HTTP/1.0 clients).
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, Protocol, cast
from urllib.parse import unquote_to_bytes

import httptools

from gatekeeper import problem
from gatekeeper.gateway.http.messages import Body, Headers, ProxyRequest, ProxyResponse, find_header
from gatekeeper.gateway.http.tunnel import Tunnel
from gatekeeper.gateway.http.writer import Framing, encode_head, framing, status_line

__all__ = ["EMPTY_BODY", "Exchange", "Handler", "HttpProtocol", "Listener", "status_line"]

logger = logging.getLogger("gatekeeper.gateway")

EMPTY_BODY = Body.of(b"")
# Request bodies up to this size (with a Content-Length, without Expect: 100-continue) are
# read whole before the request starts, as nginx buffers request bodies.
SMALL_BODY = 64 * 1024
# How long a connection closed with an unread request body keeps reading (see _Lingering).
LINGER_SECONDS = 2.0
_CHUNKED = Framing.CHUNKED
_TRAILER = b"0\r\n\r\n"
_PROBLEM = (b"content-type", problem.CONTENT_TYPE)


class Handler(Protocol):
    """What answers the requests a connection parses (the gateway's flow)."""

    server_address: tuple[str, int] | None

    def begin(self, request: ProxyRequest, conn: HttpProtocol) -> None:
        """Answer ``request`` through ``conn`` (now or later), then call ``conn.finish``."""
        ...


class Listener(Protocol):
    """What a connection reads of the server that accepted it."""

    handler: Handler
    scheme: str
    max_header_bytes: int
    connections: set[HttpProtocol]
    now: float  # a coarse loop clock
    closing: bool


class Exchange(Protocol):
    """The request a connection is answering, as the handler (the flow) represents it."""

    def cancel(self) -> None:
        """The client went away: abandon the request."""
        ...

    def resume_reading(self) -> None:
        """The client drained what was written: more of the answer may come."""
        ...


class HttpProtocol(asyncio.Protocol):
    """An HTTP/1.1 client connection."""

    def __init__(self, server: Listener) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.peer_port = 0
        self.scheme = server.scheme
        self.closed = False
        self.busy = False
        self.keep_alive = True
        self.response_started = False
        self.disconnected: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: Headers = []
        self._body: Body = EMPTY_BODY
        self._message_done = True  # (no message under way: the next bytes begin a head)
        self._pending: deque[tuple[ProxyRequest, bool]] = deque()
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self.idle_since = 0.0  # loop time when the connection became idle; 0 while busy
        self._expect_continue = False
        # The request being answered (the handler's exchange), and the task it runs in while
        # one of its steps waits (held here: a task nobody references may be collected).
        self.exchange: Exchange | None = None
        self.task: asyncio.Task[Any] | None = None
        # Upgrades: what to do when the parser stops at one ("tunnel", "ignore", "refuse"),
        # the bytes that followed a WebSocket handshake, and the tunnel once switched.
        self._upgrading: str | None = None
        self._early = b""
        self.tunnel: Tunnel | None = None
        self._deferred: tuple[ProxyRequest, bool] | None = None  # waits for its small body
        self._interim_writer = self.write_interim  # (one bound method, not one per request)
        self._in_head = False
        self._head_bytes = 0
        self._max_head = server.max_header_bytes
        self.head_since = 0.0  # the server's clock when the current head began; 0: none

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip, self.peer_port = peer[0], peer[1]
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._cancel_idle()
        exchange = self.exchange
        if exchange is not None:
            exchange.cancel()
        if not self._message_done and self._body is not EMPTY_BODY:
            self._body.set_exception(ConnectionError("client disconnected"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionError("client disconnected"))
        if self.disconnected is not None and not self.disconnected.done():
            self.disconnected.set_result(None)

    def data_received(self, data: bytes) -> None:
        # The head's size is bounded without a cost per header field: a read longer than the
        # bound that starts a head must hold the head's end within the bound, and a head
        # spanning reads is counted read by read.
        if len(data) > self._max_head and (self._in_head or self._message_done):
            room = self._max_head - (self._head_bytes if self._in_head else 0)
            end = data.find(b"\r\n\r\n", 0, room + 4)
            if end == -1:
                self._head_too_large(data.find(b"\r\n"))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data[exc.args[0] :])
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, _BadRequest):
                raise
            self._reject(400, str(cause))
            return
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")
            return
        if self._in_head:  # this read ended inside a head
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._head_too_large(len(self._url))

    def _head_too_large(self, target: int) -> None:
        if target == -1 or target > self._max_head // 2:
            self._reject(414, "the request target is longer than the gateway accepts")
        else:
            self._reject(431, "the request's header fields are larger than accepted")

    def _upgraded(self, rest: bytes) -> None:
        """The parser stopped after a request asking to switch protocols; ``rest`` is what the
        client sent after that request's head."""
        mode, self._upgrading = self._upgrading, None
        if mode is None or mode == "refuse":
            self._reject(501, "CONNECT and protocol upgrades with a request body are not supported")
            return
        self.parser = httptools.HttpRequestParser(self)
        if mode == "tunnel":
            # A WebSocket client waits for the 101 before sending more (RFC 6455 4.1): what
            # came early is kept for the tunnel, and reading waits for the answer.
            self._early = rest
            if self.transport is not None:
                self.transport.pause_reading()
            return
        if rest:  # an upgrade we ignore: HTTP/1.1 goes on (RFC 9110 7.8)
            self.data_received(rest)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.exchange is not None:
            self.exchange.resume_reading()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._cancel_idle()
        self._url = b""
        self._headers = []
        self._message_done = False
        self._expect_continue = False
        self._upgrading = None
        # Bounds on the head: its size (counted per read while it is incomplete, see
        # data_received) and how long it may take to arrive (the server's sweeper compares
        # head_since with its coarse clock: no timer here).
        self._in_head = True
        self._head_bytes = 0
        self.head_since = self.server.now

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_since = 0.0
        self._in_head = False
        parser = self.parser
        headers = self._headers
        length: int | None = None
        has_body = False
        host: str | None = None
        for name, value in headers:
            if name == b"content-length":
                has_body = True
                length = int(value)  # httptools already rejected a malformed length
            elif name == b"transfer-encoding":
                has_body = True
                length = None
            elif name == b"host":
                if host is not None:
                    raise _BadRequest("more than one Host header field")  # RFC 9112 3.2
                host = value.decode("latin-1")
        version = parser.get_http_version()
        url = self._url
        if not url.startswith(b"/"):
            url, authority = _origin_form(url)
            if authority is not None:
                host = authority  # absolute-form: its authority is the host (RFC 9112 3.2.2)
        if host is None:
            if version == "1.1":
                raise _BadRequest("an HTTP/1.1 request needs a Host header field")
            host = ""
        if has_body and length != 0:
            body = Body(length)
            transport = self.transport
            assert transport is not None
            body.set_flow_control(transport.pause_reading, transport.resume_reading)
            if self._expect_continue:
                body.on_first_read = self._send_continue
        else:
            body = EMPTY_BODY
        upgrade: bytes | None = None
        if parser.should_upgrade():
            upgrade = self._upgrade_of(headers, body is not EMPTY_BODY)
            if self._upgrading == "refuse":
                self._body = EMPTY_BODY
                return  # answered when the parser stops (data_received)
        self._body = body
        query = url.find(b"?")
        raw_path = url if query == -1 else url[:query]
        try:
            path = raw_path.decode("ascii") if b"%" not in raw_path else _unquote(raw_path)
        except UnicodeDecodeError:
            path = raw_path.decode("latin-1")
        request = ProxyRequest(
            parser.get_method().decode("ascii"),
            url,
            path,
            headers,
            body,
            version=version,
            host=host,
            scheme=self.scheme,
            client_ip=self.peer_ip,
            peer_ip=self.peer_ip,
            upgrade=upgrade,
            on_interim=self._interim_writer if version == "1.1" else None,
        )
        keep_alive = parser.should_keep_alive()
        if self.busy:
            # Pipelining: answer in order; stop reading until this one's turn.
            self._pending.append((request, keep_alive))
            if self.transport is not None:
                self.transport.pause_reading()
        elif (
            length is not None
            and length <= SMALL_BODY
            and body is not EMPTY_BODY
            and not self._expect_continue
        ):
            # A small body is awaited whole before the request starts (it usually came with
            # the head): the request is then replayable and can take the express lane.
            self._deferred = (request, keep_alive)
        else:
            self._start(request, keep_alive)

    def _upgrade_of(self, headers: Headers, has_body: bool) -> bytes | None:
        """Classify a request that asks to switch protocols; the protocol to tunnel, if any."""
        method = self.parser.get_method()
        token = find_header(headers, b"upgrade") or b""
        if method == b"CONNECT" or has_body:
            self._upgrading = "refuse"
            return None
        if (
            method == b"GET"
            and self.parser.get_http_version() == "1.1"
            and b"websocket" in token.lower()
        ):
            self._upgrading = "tunnel"
            return token
        self._upgrading = "ignore"
        return None

    def on_body(self, data: bytes) -> None:
        self._body.feed(data)

    def on_message_complete(self) -> None:
        self._message_done = True
        if self._body is not EMPTY_BODY:
            self._body.feed_eof()
            deferred = self._deferred
            if deferred is not None:
                self._deferred = None
                self._start(*deferred)

    # -- request cycle ---------------------------------------------------------------------
    def _start(self, request: ProxyRequest, keep_alive: bool) -> None:
        self.busy = True
        self.keep_alive = keep_alive
        self.response_started = False
        # The handler answers, now or later, and calls finish() when the answer is written.
        self.server.handler.begin(request, self)

    def run(self, request: ProxyRequest, work: Coroutine[Any, Any, None]) -> None:
        """Go on with ``request`` in a task running ``work`` (a step of its had to wait).
        ``work`` finishes the request itself; an exception it lets out is answered here."""
        self.task = self.loop.create_task(self._run(request, work))

    async def _run(self, request: ProxyRequest, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except ConnectionError:
            self.keep_alive = False
            self.finish(request)
        except Exception as exc:
            from gatekeeper.observability.unexpected import report_unexpected

            report_unexpected(exc, where=f"{request.method} {request.path}")
            if not self.response_started and not self.closed:
                self.send_problem(500, "internal_error", "an unexpected error occurred", request)
            self.keep_alive = False
            self.finish(request)
        finally:
            if self.task is asyncio.current_task():
                self.task = None

    def finish(self, request: ProxyRequest) -> None:
        """The response to ``request`` is written: read the next request, or close."""
        if self.tunnel is not None:
            return  # switched protocols: the tunnel owns the connection now
        self.busy = False
        transport = self.transport
        if self.closed or transport is None:
            return
        if self._early:
            # Bytes that followed a WebSocket handshake that was not switched: nothing says
            # they are HTTP, so the connection ends here.
            self._early = b""
            self.keep_alive = False
        if not self.keep_alive or not request.body.complete:
            # Closing, or the client's body did not arrive whole: the byte stream cannot be
            # resynchronised for another request.
            if not request.body.complete and transport.can_write_eof():
                # The client may still be sending its body: closing now would make the kernel
                # answer it with a reset, which can destroy the answer before it is read.
                transport.write_eof()
                transport.set_protocol(_Lingering(transport, LINGER_SECONDS))
                transport.resume_reading()
                self.connection_lost(None)
                return
            transport.close()
            self.closed = True
            return
        if self._pending:
            nxt, keep_alive = self._pending.popleft()
            if not self._pending:
                transport.resume_reading()
            self._start(nxt, keep_alive)
            return
        transport.resume_reading()
        self._arm_idle()

    def write_interim(self, head: bytes) -> None:
        """Pass an interim (1xx) response head on, while the final one has not started."""
        if self.transport is not None and not self.closed and not self.response_started:
            self.transport.write(head)

    def switch(self, response: ProxyResponse, extra: Headers | None = None) -> None:
        """Answer a 101 from the upstream and join both connections in a tunnel."""
        upstream = response.switched
        assert upstream is not None
        transport = self.transport
        if transport is None or self.closed or upstream.transport is None or upstream.closed:
            upstream.abort()
            raise ConnectionError("a side of the tunnel went away before the switch")
        self.response_started = True
        transport.write(encode_head(101, response.headers, extra, b"", b"", reason=response.reason))
        early, self._early = self._early, b""
        self.tunnel = Tunnel(transport, upstream.transport, self._tunnel_closed)
        self.tunnel.start(early, upstream.tunnel_data)

    def _tunnel_closed(self) -> None:
        # The protocol was switched away: this is its connection_lost.
        self.busy = False
        self.connection_lost(None)

    def _send_continue(self) -> None:
        if self.transport is not None and not self.closed and not self.response_started:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _reject(self, status: int, detail: str) -> None:
        """Answer ``status`` (unless a response is under way) and close the connection."""
        if self.transport is None or self.closed:
            return
        if not self.busy or not self.response_started:
            code = http.HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
            body = problem.problem_body(status, code, detail)
            self.transport.write(
                encode_head(
                    status,
                    [_PROBLEM],
                    None,
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n",
                )
                + body
            )
        self.transport.close()
        self.closed = True

    # The server's sweeper closes connections idle past the keep-alive timeout (one periodic
    # timer for all connections instead of a timer per request).
    def _arm_idle(self) -> None:
        self.idle_since = self.loop.time()

    def _cancel_idle(self) -> None:
        self.idle_since = 0.0

    def close_if_idle_since(self, before: float) -> None:
        """Close the connection if it has been idle since before ``before`` (loop time)."""
        if 0.0 < self.idle_since < before and not self.busy and self.transport is not None:
            self.transport.close()

    def close_if_head_since(self, before: float) -> None:
        """Answer 408 and close if a request head began arriving before ``before`` (loop time)
        and is still incomplete: a client too slow (or trickling on purpose) to send it."""
        if 0.0 < self.head_since < before and not self.busy:
            # (While the previous request is answered, the next head's clock waits.)
            self.head_since = 0.0
            self._reject(408, "the request head did not arrive in time")

    def close_when_idle(self) -> None:
        """Graceful shutdown: close now if idle, else after the current response."""
        self.keep_alive = False
        if not self.busy and self.transport is not None:
            self.transport.close()

    # -- writing ---------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write bytes to the client (check :attr:`must_drain` afterwards)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the client has taken what was written (backpressure)."""
        if self.closed:
            raise ConnectionError("client disconnected")
        if self.write_paused:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def connection_header(self, version_10: bool) -> bytes:
        """The Connection header line this response needs, if any."""
        if not self.keep_alive or self.server.closing or not self._body.complete:
            # (An unread request body also ends the connection: its bytes would be taken
            # for the next request; saying so lets the client retry elsewhere safely.)
            self.keep_alive = False
            return b"connection: close\r\n"
        return b"connection: keep-alive\r\n" if version_10 else b""

    def response_head(
        self,
        request: ProxyRequest,
        status: int,
        headers: Headers,
        extra: Headers | None = None,
        length: int | None = None,
        *,
        reason: bytes = b"",
        lines: bytes = b"",
    ) -> tuple[bytes, Framing]:
        """The head of the answer to ``request`` (see :mod:`.writer`) and how its body, if
        any, is to be delimited; the answer counts as started from now. ``length`` None:
        unknown (chunked, or until the connection closes)."""
        self.response_started = True
        version_10 = request.version == "1.0"
        line, mode = framing(
            status, length, head_only=request.method == "HEAD", version_10=version_10
        )
        if mode is Framing.CLOSE:
            self.keep_alive = False  # HTTP/1.0: the body ends when the connection closes
        head = encode_head(
            status,
            headers,
            extra,
            line,
            self.connection_header(version_10),
            reason=reason,
            lines=lines,
        )
        return head, mode

    def start_response(
        self,
        request: ProxyRequest,
        status: int,
        headers: Headers,
        extra: Headers | None = None,
        length: int | None = None,
        *,
        reason: bytes = b"",
    ) -> Framing:
        """Write the head of the answer to ``request`` (see :meth:`response_head`)."""
        head, mode = self.response_head(request, status, headers, extra, length, reason=reason)
        transport = self.transport
        if transport is None or self.closed:
            raise ConnectionError("client disconnected")
        transport.write(head)
        return mode

    def write_body(self, data: bytes, mode: Framing) -> None:
        """Write a piece of a body framed as ``mode`` (nothing for a body-less answer)."""
        if data and mode is not Framing.NONE:
            self.write(b"%x\r\n%b\r\n" % (len(data), data) if mode is _CHUNKED else data)

    def end_body(self, mode: Framing) -> None:
        """The body is over: the last chunk of a chunked one."""
        if mode is _CHUNKED:
            self.write(_TRAILER)

    def send_bytes(
        self,
        status: int,
        headers: Headers,
        body: bytes,
        request: ProxyRequest,
        extra: Headers | None = None,
    ) -> None:
        """Write a complete answer whose body is in hand, in one write."""
        head, mode = self.response_head(request, status, headers, extra, len(body))
        transport = self.transport
        if transport is None or self.closed:
            raise ConnectionError("client disconnected")
        transport.write(head + body if mode is Framing.LENGTH else head)

    def send_problem(
        self,
        status: int,
        error: str,
        detail: str,
        request: ProxyRequest,
        extra: Headers | None = None,
        **members: Any,
    ) -> None:
        """Answer with the problem document of ``status`` (see :mod:`gatekeeper.problem`)."""
        body = problem.problem_body(status, error, detail, **members)
        headers = [*extra, _PROBLEM] if extra else [_PROBLEM]
        self.send_bytes(status, headers, body, request)

    async def send_response(
        self, response: ProxyResponse, request: ProxyRequest, extra: Headers | None = None
    ) -> None:
        """Write ``response``, streaming its body with backpressure."""
        body = response.body
        data = b""
        length = body.length
        if body.complete and request.method != "HEAD":
            data = body.take()
            length = len(data)
        mode = self.start_response(
            request, response.status, response.headers, extra, length, reason=response.reason
        )
        if mode is Framing.NONE:
            return
        if data or body.at_eof:
            self.write(data)
            return
        await self._stream(body, mode)

    async def _stream(self, body: Body, mode: Framing) -> None:
        transport = self.transport
        assert transport is not None
        chunked = mode is _CHUNKED
        try:
            while chunk := await body.read():
                if self.closed:
                    raise ConnectionError("client disconnected")
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if self.write_paused:
                    await self.drain()
        except ConnectionError:
            raise
        except Exception:
            # The upstream failed mid-body: the status line is gone, so the only honest
            # signal left is to cut the connection (the client sees a truncated body).
            logger.warning("upstream failed while streaming a response body", exc_info=True)
            self.keep_alive = False
            transport.abort()
            self.closed = True
            raise ConnectionError("upstream failed mid-body") from None
        if chunked:
            transport.write(_TRAILER)


class _BadRequest(Exception):
    """Raised from a parser callback: the request breaks a rule of HTTP/1.1 (answered 400)."""


def _origin_form(target: bytes) -> tuple[bytes, str | None]:
    """A request target in absolute form (``http://host/path``) as a path, and its authority
    (None for other forms: ``*``, or what the parser let through)."""
    scheme_end = target.find(b"://")
    if scheme_end == -1 or target[:scheme_end].lower() not in (b"http", b"https"):
        return target, None
    rest = target[scheme_end + 3 :]
    slash = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i != -1), default=-1)
    authority = rest if slash == -1 else rest[:slash]
    path = b"/" if slash == -1 else rest[slash:]
    if path.startswith(b"?"):
        path = b"/" + path
    return path, authority.decode("latin-1")


class _Lingering(asyncio.Protocol):
    """A connection answered while its client was still sending (an unread body): the write
    side is shut, and what still arrives is read and dropped for a moment before closing, so
    that the client reads the answer instead of a reset (what nginx calls a lingering close)."""

    def __init__(self, transport: asyncio.Transport, seconds: float) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(seconds, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self.timer.cancel()
        return False  # the client is done too: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()


def _unquote(raw: bytes) -> str:
    return unquote_to_bytes(raw).decode("utf-8")
