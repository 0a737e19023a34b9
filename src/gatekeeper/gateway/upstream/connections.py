"""A lean keep-alive connection pool to upstream endpoints (asyncio Protocol + httptools).

The upstream client decides the gateway's speed, so this is deliberately small: one
:class:`UpstreamConnection` is an ``asyncio.Protocol`` parsing responses with
``httptools.HttpResponseParser`` straight from ``data_received`` and handing what it parses to a
:class:`ResponseSink` as it goes: the head, pieces of the body, the end of each read, the end of
the response or its failure. No futures, streams or per-chunk tasks: whoever forwards a request
(:mod:`gatekeeper.gateway.upstream.forward`) is the sink, and decides whether the answer is
relayed to the client at once or collected into a :class:`~gatekeeper.gateway.http.messages.Body`.
Idle connections wait in a LIFO per endpoint (the most recently used one is the least likely to
have been closed by the upstream's idle timeout).

Timeouts cost no timer per request: a :class:`Watchdog` checks the exchanges in flight every
50 ms against their "last activity" timestamp and deadline (so a timeout fires up to 50 ms late,
and a streaming body costs nothing per chunk).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from gatekeeper.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout
from gatekeeper.gateway.http.writer import HOP_BY_HOP, NO_BODY_STATUS, status_line

__all__ = ["ConnectionPool", "ResponseSink", "UpstreamConnection", "Watchdog"]

Headers = list[tuple[bytes, bytes]]

_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close"})


class ResponseSink(Protocol):
    """Where a response goes as it is parsed (see :meth:`UpstreamConnection.relay`)."""

    def on_head(
        self, status: int, reason: bytes, headers: Headers, length: int | None, chunked: bool
    ) -> bool:
        """The final response head (end-to-end headers only); False discards the response
        (the connection is then closed, not reused)."""
        ...

    def on_body(self, data: bytes) -> None:
        """A piece of the body (de-chunked)."""
        ...

    def on_flush(self) -> None:
        """The end of one read that did not end the response."""
        ...

    def on_end(self) -> None:
        """The response is complete; the connection is released already."""
        ...

    def on_error(self, exc: UpstreamError, head_seen: bool) -> None:
        """The exchange failed (timeout, connection lost, bad HTTP) after the head or not."""
        ...

    def on_switched(self, reason: bytes, headers: Headers) -> None:
        """A 101 answered a request that asked to switch protocols: from now on the
        connection carries the new protocol (see :attr:`UpstreamConnection.tunnel_data`)."""
        ...


class Watchdog:
    """Checks the read and total timeouts of exchanges in flight, every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.active: set[UpstreamConnection] = set()
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, conn: UpstreamConnection) -> None:
        self.active.add(conn)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def unwatch(self, conn: UpstreamConnection) -> None:
        self.active.discard(conn)

    def _tick(self) -> None:
        self._handle = None
        now = time.monotonic()
        for conn in list(self.active):
            conn.check(now)
        if self.active:
            self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to an upstream endpoint."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self._sink: ResponseSink | None = None  # the exchange's sink while one is under way
        self._head_seen = False
        self._reset_parser = False
        self._headers: Headers = []
        self._reason = b""
        self._head_only = False
        self._message_done = False
        self._request_sent = True
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._read_timeout = 0.0
        self._deadline = 0.0
        self._last_activity = 0.0
        self._interim: Callable[[bytes], None] | None = None  # passes 1xx heads on
        self._upgrading = False  # the request asks to switch protocols (WebSocket)
        self._upgrade_to = b""
        self.tunnel_data = b""  # the upgraded protocol's first bytes, read with the 101

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last_activity = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self._upgrading and self._message_done:  # the 101 it asked for: see _switch
                self.tunnel_data = data[exc.args[0] :]
                return
            self._fail(UpstreamConnectError(f"upstream {self.pool.address} switched unasked"))
            return
        except httptools.HttpParserError as exc:
            self._fail(UpstreamConnectError(f"upstream {self.pool.address} sent bad HTTP: {exc}"))
            return
        if self._reset_parser:
            # httptools cannot be told a response answers HEAD: start a fresh parser so that
            # the Content-Length of the HEAD response is not awaited as a body.
            self._reset_parser = False
            self.parser = httptools.HttpResponseParser(self)
        sink = self._sink
        if sink is not None:
            sink.on_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._cancel_timer()
        sink = self._sink
        if sink is not None and not self._message_done:
            self._sink = None
            self._message_done = True
            if self._head_seen and self._length is None and not self._chunked:
                sink.on_end()  # a body delimited by the connection closing: it ended well
            else:
                sink.on_error(
                    UpstreamConnectError(f"upstream {self.pool.address} closed the connection"),
                    self._head_seen,
                )
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self.pool.discard(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------
    _chunked = False
    _length: int | None = None
    _listed: set[bytes] | None = None

    def on_message_begin(self) -> None:
        self._headers = []
        self._length = None
        self._chunked = False
        self._listed = None
        self._reason = b""
        self._message_done = False

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        # Hop-by-hop and framing headers are consumed here, so the response's header list is
        # end-to-end already (one pass, no filtering afterwards).
        name = name.lower()
        if name in HOP_BY_HOP:
            if name == b"content-length":
                try:
                    self._length = int(value)
                except ValueError:
                    self._length = None
            elif name == b"transfer-encoding":
                self._chunked = self._chunked or b"chunked" in value.lower()
            elif name == b"connection":
                lowered = value.lower()
                if lowered == b"keep-alive" or lowered == b"close":
                    return  # (the common values: nothing else is listed)
                tokens = [t.strip().lower() for t in lowered.split(b",")]
                listed = [t for t in tokens if t and t not in _CONNECTION_OPTIONS]
                if listed:
                    self._listed = (self._listed or set()).union(listed)
            elif name == b"upgrade":
                self._upgrade_to = value
            return
        if name.startswith(b"proxy-"):
            return
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101 and self._upgrading and self._upgrade_to:
                self._switch()
                return
            # 1xx: interim (103 Early Hints, 102 Processing); the final response follows. They
            # are passed on (RFC 9110 15.2), except 100 Continue, which the gateway answers
            # itself when it starts reading a request body, and an unasked 101.
            if status != 100 and status != 101 and self._interim is not None:
                self._interim(self._interim_head(status))
            self._headers = []
            self._reason = b""
            self._length = None
            self._chunked = False
            self._listed = None
            return
        length = self._length
        chunked = self._chunked
        if self._listed is not None:
            listed = self._listed
            self._headers = [(n, v) for n, v in self._headers if n not in listed]
        if chunked:
            length = None
        if self._head_only:
            self._reset_parser = True
        elif status in NO_BODY_STATUS:
            length = None
        sink = self._sink
        if sink is None:
            return
        self._head_seen = True
        if not self.parser.should_keep_alive():
            self.reusable = False
        reason, self._reason = self._reason, b""
        if not sink.on_head(status, reason, self._headers, length, chunked):
            self._sink = None
            self.abort()  # discarded: the rest of the response is not worth reading
            return
        if self._head_only:
            self._message_done = True
            self._sink = None
            self._finish()
            sink.on_end()

    def _interim_head(self, status: int) -> bytes:
        listed = self._listed
        parts = [status_line(status, self._reason)]
        for name, value in self._headers:
            if listed is None or name not in listed:
                parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _switch(self) -> None:
        """The 101 this exchange asked for: the connection now belongs to the tunnel the
        client side builds (it is never reused, and its timeouts stop)."""
        self._cancel_timer()
        self.reusable = False
        self._message_done = True
        if self.transport is not None:
            self.transport.pause_reading()  # until the tunnel takes it over
        headers = [*self._headers, (b"connection", b"upgrade"), (b"upgrade", self._upgrade_to)]
        reason, self._reason = self._reason, b""
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.on_switched(reason, headers)

    def on_body(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink.on_body(data)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200 or self._message_done:
            return
        self._message_done = True
        sink = self._sink
        self._sink = None
        self._finish()
        if sink is not None:
            sink.on_end()

    # -- the exchange ----------------------------------------------------------------------
    def relay(
        self,
        data: bytes,
        sink: ResponseSink,
        *,
        head_only: bool,
        read_timeout: float,
        total_timeout: float,
        interim: Callable[[bytes], None] | None = None,
        streaming: bool = False,
        upgrade: bool = False,
    ) -> None:
        """Write a request (its head, and its body when complete) and pass the response to
        ``sink`` while parsing it.

        ``streaming``: the body follows through :meth:`write`, and the connection is reused
        only after :meth:`request_complete`. ``interim`` is given the head of each interim
        (1xx) response to pass on. ``upgrade``: the request asks to switch protocols; a 101
        answer reaches ``sink.on_switched``.
        """
        transport = self.transport
        assert transport is not None
        self._sink = sink
        self._interim = interim
        self._upgrading = upgrade
        if upgrade:
            self._upgrade_to = b""
        self._head_only = head_only
        self._message_done = False
        self._head_seen = False
        self._chunked = False
        self._request_sent = not streaming
        now = time.monotonic()
        self._last_activity = now
        self._read_timeout = read_timeout
        self._deadline = now + total_timeout
        self.pool.watchdog.watch(self)
        transport.write(data)

    def abandon(self) -> None:
        """Stop relaying (the client went away): the connection is closed, not reused."""
        self._sink = None
        self.abort()

    def pause_reading(self) -> None:
        """Stop reading the response (the client is slower than the upstream)."""
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    async def write(self, data: bytes) -> None:
        """Write part of a streamed request body, waiting while the upstream is slow."""
        if self.closed or self.transport is None:
            raise UpstreamConnectError(f"upstream {self.pool.address} closed the connection")
        self.transport.write(data)
        self._last_activity = time.monotonic()
        if self._write_paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain
            self._drain = None

    def request_complete(self) -> None:
        """The whole request was written; reuse is possible once the response ends."""
        self._request_sent = True
        if self._message_done:
            self._release()

    def abort(self) -> None:
        """Give up on this connection (client went away, response abandoned)."""
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def check(self, now: float) -> None:
        """Fail the exchange if it ran past its deadline or the upstream went quiet."""
        if self._message_done:
            self._cancel_timer()
        elif now >= self._deadline:
            self._fail(UpstreamTimeout(f"upstream {self.pool.address}: total timeout"))
        elif now - self._last_activity >= self._read_timeout:
            self._fail(
                UpstreamTimeout(
                    f"upstream {self.pool.address}: no data for {self._read_timeout:g}s"
                )
            )

    def _cancel_timer(self) -> None:
        self.pool.watchdog.unwatch(self)

    def _fail(self, exc: UpstreamError) -> None:
        self._cancel_timer()
        self.reusable = False
        sink, self._sink = self._sink, None
        head_seen = self._head_seen
        self._message_done = True
        if self.transport is not None:
            self.transport.abort()
        if sink is not None:
            sink.on_error(exc, head_seen)

    def _finish(self) -> None:
        self._cancel_timer()
        if self._request_sent:
            self._release()

    def _release(self) -> None:
        if self.reusable and not self.closed:
            self.pool.release(self)
        else:
            self.abort()


class ConnectionPool:
    """Idle keep-alive connections to one endpoint (``host:port``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_idle: int = 128,
        idle_timeout: float = 60.0,
        watchdog: Watchdog | None = None,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        self.watchdog = watchdog or Watchdog()
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.tls = tls  # HTTPS: the context, and the name verified and sent as SNI
        self.server_name = server_name or host
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: deque[UpstreamConnection] = deque()
        self.opened = 0
        self.reused = 0

    def take_idle(self) -> UpstreamConnection | None:
        """An idle connection still fit for reuse, or None (synchronous: the hot path)."""
        idle = self._idle
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_timeout:
                self.reused += 1
                return conn
            conn.abort()
        return None

    async def acquire(self, connect_timeout: float, *, fresh: bool = False) -> UpstreamConnection:
        """An idle connection, or a new one within ``connect_timeout`` seconds (always a new
        one when ``fresh``: after a kept-alive one turned out closed, the others may be too)."""
        if not fresh:
            conn = self.take_idle()
            if conn is not None:
                return conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                if self.tls is None:
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConnection(self), self.host, self.port
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConnection(self),
                        self.host,
                        self.port,
                        ssl=self.tls,
                        server_hostname=self.server_name,
                        ssl_handshake_timeout=connect_timeout,
                    )
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"upstream {self.address}: no connection within {connect_timeout:g}s"
            ) from exc
        except OSError as exc:
            raise UpstreamConnectError(f"upstream {self.address}: {exc.strerror or exc}") from exc
        self.opened += 1
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a finished connection for reuse (closes it when the pool is full)."""
        if len(self._idle) >= self.max_idle:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        """Forget a connection that closed while idle."""
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().abort()

    @property
    def idle(self) -> int:
        return len(self._idle)
