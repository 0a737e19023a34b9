"""The request and response shapes the cache works on, independent of the proxy's own types.

The gateway adapts its messages to these (see :mod:`gatekeeper.gateway.cache.cache`); keeping the
cache on its own small types lets its rules be tested without sockets. Header names are compared
case-insensitively; values are kept as received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatekeeper.gateway.cache.status import CacheStatus

__all__ = [
    "CacheRequest",
    "CacheResponse",
    "Forward",
    "Headers",
    "body_of",
    "get_header",
    "get_headers",
    "iterate_once",
    "without_headers",
]

Headers = list[tuple[str, str]]


def get_header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """All values of ``name`` joined with ``", "`` (RFC 9110 5.3), or ``None`` if absent."""
    values = get_headers(headers, name)
    return ", ".join(values) if values else None


def get_headers(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    """Every value of the field ``name``, in order."""
    lowered = name.lower()
    return [value for key, value in headers if key.lower() == lowered]


def without_headers(headers: Iterable[tuple[str, str]], names: Iterable[str]) -> Headers:
    """A copy of ``headers`` without the fields in ``names`` (case-insensitive)."""
    drop = {name.lower() for name in names}
    return [(key, value) for key, value in headers if key.lower() not in drop]


async def iterate_once(body: bytes) -> AsyncIterator[bytes]:
    """A body iterator that yields ``body`` once (nothing for an empty body)."""
    if body:
        yield body


async def body_of(response: CacheResponse, limit: int | None = None) -> bytes | None:
    """Read a whole response body; ``None`` if it grows past ``limit`` (the rest is drained)."""
    parts: list[bytes] = []
    size = 0
    over = False
    async for chunk in response.body:
        size += len(chunk)
        if limit is not None and size > limit:
            over = True
            parts.clear()
        elif not over:
            parts.append(chunk)
    return None if over else b"".join(parts)


@dataclass
class CacheRequest:
    """A client request as the cache sees it: method, authority, target (path and query)."""

    method: str
    host: str
    target: str
    headers: Headers = field(default_factory=list)
    # The route's lifetime for answers that give no freshness of their own (nginx's
    # proxy_cache_valid), or None: such answers are stored only to be revalidated.
    default_ttl: float | None = None
    _index: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def header(self, name: str) -> str | None:
        """The combined value of header ``name``, or ``None``."""
        index = self._index
        if index is None:  # one pass over the fields, then every lookup is a dict get
            index = {}
            for key, value in self.headers:
                lowered = key.lower()
                index[lowered] = f"{index[lowered]}, {value}" if lowered in index else value
            self._index = index
        return index.get(name.lower())


@dataclass
class CacheResponse:
    """A response with a streamed body: from the upstream, or built from a stored entry."""

    status: int
    headers: Headers
    body: AsyncIterator[bytes]
    content: bytes | None = None
    """The whole body when it is already in memory (a hit): lets writers skip streaming."""
    cache_status: CacheStatus | None = None
    """How the cache handled the request (set on every response the cache returns)."""

    def header(self, name: str) -> str | None:
        """The combined value of header ``name``, or ``None``."""
        return get_header(self.headers, name)


Forward = Callable[[CacheRequest], Awaitable[CacheResponse]]
"""The proxy's coroutine that sends a request upstream and returns the streamed response.

It raises :class:`~gatekeeper.errors.UpstreamError` when the upstream cannot be reached.
"""
