"""The one place a response head is written: status line, fields, body framing, Connection.

Every answer the gateway gives goes through :func:`encode_head`: proxied responses relayed as
they are parsed, streamed responses, cache hits, built-in endpoints, problems, interim and
switching responses. So the rules of HTTP/1.1 framing (RFC 9112 6) live here once:

- 1xx, 204 and 304 answers never carry a body, whatever their fields say (RFC 9110 6.4.1);
- an answer to ``HEAD`` announces the length the ``GET`` would have, and sends no body;
- a body of known length is framed by ``Content-Length``; one of unknown length by chunked
  transfer coding, except for HTTP/1.0 clients, who get a body delimited by the connection
  closing (they know no chunked coding).

The fields handed in are end-to-end only: hop-by-hop fields (:data:`HOP_BY_HOP`) are removed
where messages are parsed, and framing is decided here.
"""

from __future__ import annotations

import enum
import http

__all__ = ["HOP_BY_HOP", "NO_BODY_STATUS", "Framing", "encode_head", "framing", "status_line"]

Headers = list[tuple[bytes, bytes]]

# Hop-by-hop fields (RFC 9110 7.6.1) and the framing fields every writer re-does itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
# Statuses whose answers never have a body, whatever their fields say (RFC 9110 6.4.1).
NO_BODY_STATUS = frozenset({204, 304})

_STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus
}


def status_line(status: int, reason: bytes = b"") -> bytes:
    """``HTTP/1.1 200 OK\\r\\n`` (the standard phrase unless ``reason`` is given)."""
    if not reason:
        line = _STATUS_LINES.get(status)
        if line is not None:
            return line
    return b"HTTP/1.1 %d %b\r\n" % (status, reason)


class Framing(enum.Enum):
    """How the body after a head is delimited."""

    NONE = "none"  # no body at all (1xx, 204, 304, HEAD)
    LENGTH = "length"  # Content-Length bytes
    CHUNKED = "chunked"  # chunked transfer coding, ended by a zero-size chunk
    CLOSE = "close"  # until the connection closes (HTTP/1.0 clients, unknown length)


_NONE, _LENGTH, _CHUNKED, _CLOSE = Framing.NONE, Framing.LENGTH, Framing.CHUNKED, Framing.CLOSE
_CHUNKED_LINE = b"transfer-encoding: chunked\r\n"


def framing(
    status: int, length: int | None, *, head_only: bool, version_10: bool
) -> tuple[bytes, Framing]:
    """The framing field line of an answer and how its body is delimited."""
    if status < 200 or status in NO_BODY_STATUS:
        return b"", _NONE
    if head_only:
        return (b"" if length is None else b"content-length: %d\r\n" % length), _NONE
    if length is not None:
        return b"content-length: %d\r\n" % length, _LENGTH
    if version_10:
        return b"", _CLOSE
    return _CHUNKED_LINE, _CHUNKED


def encode_head(
    status: int,
    headers: Headers,
    extra: Headers | None,
    framing_line: bytes,
    connection: bytes,
    *,
    reason: bytes = b"",
    lines: bytes = b"",
) -> bytes:
    """A whole response head: the status line, ``headers`` (and the same as pre-encoded
    ``lines``, e.g. a stored answer's), then ``extra`` (fields the gateway adds: request id,
    RateLimit, ...), the framing line from :func:`framing` and the Connection line the client
    connection decided."""
    parts = [status_line(status, reason)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if lines:
        parts.append(lines)
    if extra:
        for name, value in extra:
            parts += (name, b": ", value, b"\r\n")
    parts += (framing_line, connection, b"\r\n")
    return b"".join(parts)
