"""The gateway's request and response types, and the hook where a cache wraps forwarding.

Both messages carry raw header lists (``list[tuple[bytes, bytes]]``, names lower-cased, values
as received) because the hot path never decodes what it only passes through. Bodies are
:class:`Body` objects: either complete (the common case: small bodies arrive in the same read as
their head) or a stream fed by a socket, with backpressure: when more than ``high_water`` bytes
wait unread the producer's transport is paused, and resumed when the consumer catches up. A
100 MB upload or download therefore never sits in memory.

The forwarding step has the shape :data:`Forward`. A :class:`ResponseCache` wraps it for
GET/HEAD on routes that enable caching: the pipeline calls ``await cache.handle(request,
forward)`` instead of ``await forward(request)``; ``forward`` may be called with a copy of the
request carrying conditional headers (``request.replace_headers(...)``) and returns the
upstream's response with hop-by-hop headers already removed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from gatekeeper.errors import BodyTooLarge

if TYPE_CHECKING:
    pass

__all__ = [
    "Body",
    "Forward",
    "ProxyRequest",
    "ProxyResponse",
    "ResponseCache",
    "SwitchedConnection",
    "find_header",
]

Headers = list[tuple[bytes, bytes]]

_EMPTY = b""


class SwitchedConnection(Protocol):
    """The upstream side of a 101 answer: its transport now carries the upgraded protocol."""

    transport: asyncio.Transport | None
    closed: bool
    tunnel_data: bytes

    def abort(self) -> None: ...


def find_header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case bytes), or ``None``."""
    for key, value in headers:
        if key == name:
            return value
    return None


class Body:
    """A message body: complete bytes, or a stream with backpressure on its producer.

    The producer (a socket protocol) calls :meth:`feed`, :meth:`feed_eof` or
    :meth:`set_exception`, and registers ``pause``/``resume`` callbacks with
    :meth:`set_flow_control`. The consumer calls :meth:`read` until it returns ``b""``, or
    iterates with ``async for``. ``length`` is the declared Content-Length (``None`` when the
    body is chunked or delimited by the connection closing).
    """

    __slots__ = (
        "_chunks",
        "_eof",
        "_exc",
        "_pause",
        "_paused",
        "_resume",
        "_size",
        "_waiter",
        "high_water",
        "length",
        "limit",
        "on_first_read",
        "received",
    )

    def __init__(self, length: int | None = None, high_water: int = 256 * 1024) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pause: Callable[[], Any] | None = None
        self._resume: Callable[[], Any] | None = None
        self._paused = False
        self.high_water = high_water
        self.length = length
        self.received = 0
        self.limit: int | None = None  # bytes accepted; more fails the body (BodyTooLarge)
        # Called once when a consumer first waits for bytes: the client protocol uses it to
        # send "100 Continue" only when somebody actually wants the body.
        self.on_first_read: Callable[[], Any] | None = None

    @classmethod
    def of(cls, data: bytes = _EMPTY) -> Body:
        """A complete body holding ``data``."""
        body = cls(len(data))
        if data:
            body._chunks.append(data)
            body._size = body.received = len(data)
        body._eof = True
        return body

    # -- producer side -------------------------------------------------------------------
    def set_flow_control(self, pause: Callable[[], Any], resume: Callable[[], Any]) -> None:
        """Callbacks that stop and restart the producer (a transport's reading)."""
        self._pause = pause
        self._resume = resume

    def feed(self, data: bytes) -> None:
        """Append a chunk; pauses the producer past ``high_water`` unread bytes."""
        self._chunks.append(data)
        self._size += len(data)
        self.received += len(data)
        if self.limit is not None and self.received > self.limit:
            self.set_exception(BodyTooLarge(f"the request body is larger than {self.limit} bytes"))
            if self._pause is not None and not self._paused:
                self._paused = True
                self._pause()  # nothing more is wanted from this body
            return
        if self._size > self.high_water and not self._paused and self._pause is not None:
            self._paused = True
            self._pause()
        self._wake()

    def feed_eof(self) -> None:
        """The body is complete."""
        self._eof = True
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        """The producer failed: the consumer's next read raises ``exc``."""
        if not self._eof:
            self._exc = exc
            self._eof = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- consumer side -------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """True when every byte is buffered here (no more reads from the producer)."""
        return self._eof and self._exc is None

    @property
    def at_eof(self) -> bool:
        """True when the producer is done (or failed) and every chunk has been read."""
        return self._eof and not self._chunks

    def take(self) -> bytes:
        """Everything buffered so far, as one bytes object (clears the buffer)."""
        chunks = self._chunks
        if not chunks:
            data = _EMPTY
        elif len(chunks) == 1:
            data = chunks.popleft()
        else:
            data = _EMPTY.join(chunks)
            chunks.clear()
        self._size = 0
        self._maybe_resume()
        return data

    async def read(self) -> bytes:
        """The next chunk(s); ``b""`` once the body is over. Raises the producer's error."""
        if self.on_first_read is not None:
            callback, self.on_first_read = self.on_first_read, None
            callback()
        while not self._chunks:
            if self._eof:
                if self._exc is not None:
                    raise self._exc
                return _EMPTY
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self.take()

    async def read_all(self, limit: int | None = None) -> bytes:
        """The whole body. Raises ``ValueError`` past ``limit`` bytes (never buffers more)."""
        parts: list[bytes] = []
        total = 0
        while chunk := await self.read():
            total += len(chunk)
            if limit is not None and total > limit:
                raise ValueError(f"body larger than {limit} bytes")
            parts.append(chunk)
        return _EMPTY.join(parts)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    def _maybe_resume(self) -> None:
        if self._paused and self._resume is not None:
            self._paused = False
            self._resume()


class ProxyRequest:
    """One client request as the gateway forwards it.

    ``target`` is the raw request-target (path and query, undecoded); ``path`` is its path as a
    string, used for routing. ``headers`` are the end-to-end headers the upstream will see once
    the proxy adds the forwarding headers. ``client_ip`` is the resolved client address (socket
    peer, or X-Forwarded-For when the peer is a trusted proxy).

    ``upgrade`` is the protocol a WebSocket handshake asks to switch to (the ``Upgrade`` value;
    None for every other request). ``on_interim`` writes an interim (1xx) response head to the
    client; None where the client must not get one (HTTP/1.0, RFC 9110 15.2).
    """

    __slots__ = (
        "body",
        "client_ip",
        "headers",
        "host",
        "method",
        "on_interim",
        "path",
        "peer_ip",
        "route",
        "scheme",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        path: str,
        headers: Headers,
        body: Body,
        *,
        version: str = "1.1",
        host: str = "",
        scheme: str = "http",
        client_ip: str = "",
        peer_ip: str = "",
        route: Any = None,
        upgrade: bytes | None = None,
        on_interim: Callable[[bytes], None] | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.headers = headers
        self.body = body
        self.version = version
        self.host = host
        self.scheme = scheme
        self.client_ip = client_ip
        self.peer_ip = peer_ip
        self.route = route
        self.upgrade = upgrade
        self.on_interim = on_interim

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case bytes)."""
        return find_header(self.headers, name)

    def replace_headers(self, headers: Headers) -> ProxyRequest:
        """A copy with other headers (same body object): for conditional revalidation."""
        return ProxyRequest(
            self.method,
            self.target,
            self.path,
            headers,
            self.body,
            version=self.version,
            host=self.host,
            scheme=self.scheme,
            client_ip=self.client_ip,
            peer_ip=self.peer_ip,
            route=self.route,
            upgrade=self.upgrade,
            on_interim=self.on_interim,
        )

    def __repr__(self) -> str:
        return f"<ProxyRequest {self.method} {self.target!r} from {self.client_ip}>"


class ProxyResponse:
    """A response to send to the client.

    ``headers`` hold end-to-end headers only (no Connection, Transfer-Encoding or
    Content-Length: the writer frames the body itself from ``body.length``/``body.complete``).
    ``upstream`` names the endpoint that answered (``"host:port"``) or ``""`` for responses the
    gateway made itself. ``switched`` is the upstream connection of a 101 (Switching Protocols)
    answer: from then on it carries the upgraded protocol, tunnelled to the client.
    """

    __slots__ = ("body", "headers", "reason", "status", "switched", "upstream")

    def __init__(
        self,
        status: int,
        headers: Headers,
        body: Body,
        *,
        reason: bytes = b"",
        upstream: str = "",
        switched: SwitchedConnection | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.reason = reason
        self.upstream = upstream
        self.switched = switched

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case bytes)."""
        return find_header(self.headers, name)

    def __repr__(self) -> str:
        return f"<ProxyResponse {self.status} from {self.upstream or 'gateway'}>"


Forward = Callable[[ProxyRequest], Awaitable[ProxyResponse]]
"""The forwarding step: send the request upstream, return its (streaming) response."""


class ResponseCache(Protocol):
    """What the pipeline calls for cacheable requests (GET/HEAD on a route with a cache)."""

    async def handle(self, request: ProxyRequest, forward: Forward) -> ProxyResponse:
        """Answer from the cache, or call ``forward`` (possibly with conditional headers)."""
        ...

    def fresh_hit(self, request: ProxyRequest) -> tuple[int, bytes, bytes, int | None] | None:
        """A usable stored answer found without awaiting: status, header lines, body and the
        Content-Length to announce; ``None``: call :meth:`handle`."""
        ...
