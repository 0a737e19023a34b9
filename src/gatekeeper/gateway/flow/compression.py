"""Response compression: gzip for clients that accept it, on routes that ask for it.

A route with ``compress`` has the upstream's (or the cache's) answers gzipped on the way to
clients whose ``Accept-Encoding`` allows gzip, when the answer is worth it:

- a 200-class status other than 204 and 206, no ``Content-Encoding`` of its own, no
  ``Cache-Control: no-transform``;
- a compressible type (``text/*`` except event streams, JSON, XML, JavaScript, SVG, and
  ``+json``/``+xml`` types, or the route's own list);
- at least ``min_bytes`` long when its length is known.

The answer gets ``Content-Encoding: gzip``, ``Vary: Accept-Encoding``, a weak ``ETag`` (the
bytes changed, the meaning did not: RFC 9110 8.8.1) and is re-framed (its length is known if it
came whole, else it is chunked). A streamed body is compressed as it streams.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from gatekeeper.gateway.http.messages import Body, Headers, ProxyRequest, ProxyResponse, find_header

__all__ = ["Compression", "compress_response"]

_TYPES = ("text/", "application/json", "application/javascript", "application/xml",
          "image/svg+xml")  # fmt: skip
_NEVER = ("text/event-stream",)  # compressing would hold events back until a block fills


@dataclass(frozen=True, slots=True)
class Compression:
    """A route's ``compress`` settings."""

    min_bytes: int = 1024
    level: int = 6
    types: tuple[str, ...] = ()  # media type prefixes; empty: the usual text types

    def compressible(self, content_type: bytes | None) -> bool:
        if content_type is None:
            return False
        media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
        if media.startswith(_NEVER):
            return False
        if self.types:
            return media.startswith(self.types)
        return media.startswith(_TYPES) or media.endswith(("+json", "+xml"))


def accepts_gzip(request: ProxyRequest) -> bool:
    """Whether the client's ``Accept-Encoding`` allows gzip (``q=0`` refuses it)."""
    value = request.header(b"accept-encoding")
    if value is None:
        return False
    for item in value.lower().split(b","):
        coding, _, params = item.strip().partition(b";")
        if coding in (b"gzip", b"x-gzip", b"*"):
            q = params.strip()
            return not (q.startswith(b"q=") and _q_is_zero(q[2:]))
    return False


def _q_is_zero(value: bytes) -> bool:
    try:
        return float(value) == 0.0
    except ValueError:
        return False


def compress_response(
    settings: Compression, request: ProxyRequest, response: ProxyResponse
) -> ProxyResponse:
    """``response`` gzipped if it is worth it and the client takes it (else itself)."""
    status = response.status
    if not 200 <= status < 300 or status in (204, 206) or not accepts_gzip(request):
        return response
    headers = response.headers
    if find_header(headers, b"content-encoding") is not None:
        return response
    if b"no-transform" in (find_header(headers, b"cache-control") or b"").lower():
        return response
    if not settings.compressible(find_header(headers, b"content-type")):
        return response
    body = response.body
    if body.length is not None and body.length < settings.min_bytes:
        return response
    edited = _gzip_headers(headers)
    if request.method == "HEAD":
        gzipped = Body(None)  # the length of the gzipped GET answer is not known
        gzipped.feed_eof()
    elif body.complete:
        gzipped = Body.of(_gzip_all(body.take(), settings.level))
    else:
        gzipped = _GzippedBody(body, settings.level)
    response.headers = edited
    response.body = gzipped
    return response


def _gzip_headers(headers: Headers) -> Headers:
    out: Headers = []
    vary_done = False
    for name, value in headers:
        if name == b"etag" and not value.startswith(b"W/"):
            value = b"W/" + value
        elif name == b"vary":
            if b"accept-encoding" not in value.lower() and value.strip() != b"*":
                value = value + b", Accept-Encoding"
            vary_done = True
        out.append((name, value))
    out.append((b"content-encoding", b"gzip"))
    if not vary_done:
        out.append((b"vary", b"Accept-Encoding"))
    return out


def _compressor(level: int) -> zlib._Compress:
    return zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip framing


def _gzip_all(data: bytes, level: int) -> bytes:
    compressor = _compressor(level)
    return compressor.compress(data) + compressor.flush()


class _GzippedBody(Body):
    """A streamed body compressed as it is read."""

    __slots__ = ("_compressor", "_source")

    def __init__(self, source: Body, level: int) -> None:
        super().__init__(None)
        self._source = source
        self._compressor = _compressor(level)

    async def read(self) -> bytes:
        if self._eof:
            return b""
        while True:
            chunk = await self._source.read()
            if not chunk:
                self._eof = True
                return self._compressor.flush()
            out = self._compressor.compress(chunk)
            if out:
                self.received += len(out)
                return out
