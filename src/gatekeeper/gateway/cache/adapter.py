"""The bridge between the gateway's messages and the cache: the pipeline's ``ResponseCache``.

The pipeline calls ``await gateway_cache.handle(request, forward)`` for GET/HEAD on routes whose
``route.cache`` is set (see :mod:`gatekeeper.gateway.http.messages`). This module converts the
gateway's byte headers and :class:`Body` objects to the cache's small types and back, so that
the cache's rules stay independent of the proxy's internals. A streamed upstream body stays
streamed: the client's :class:`Body` pulls from the cache's tee, chunk by chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sized
from typing import Any, NamedTuple

from gatekeeper.gateway.cache.cache import HttpCache
from gatekeeper.gateway.cache.config import RouteCache
from gatekeeper.gateway.cache.exchange import CacheRequest, CacheResponse, iterate_once
from gatekeeper.gateway.cache.keys import primary_key
from gatekeeper.gateway.cache.status import CacheStatus
from gatekeeper.gateway.http.messages import Body, Forward, ProxyRequest, ProxyResponse

__all__ = ["GatewayCache", "StoredAnswer", "cache_result", "metric_result"]

_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# Request fields that can change a hit's answer: such requests take the cache's general way.
_DIRECTIVES = frozenset({b"cache-control", b"if-none-match", b"if-modified-since", b"range"})


class _PulledBody(Body):
    """A :class:`Body` whose chunks come from an async iterator instead of a socket."""

    __slots__ = ("_source",)

    def __init__(self, source: AsyncIterator[bytes], length: int | None) -> None:
        super().__init__(length)
        self._source = source

    async def read(self) -> bytes:
        if self._eof:
            return b""
        try:
            chunk = await anext(self._source)
        except StopAsyncIteration:
            self._eof = True
            return b""
        except BaseException:
            self._eof = True
            raise
        self.received += len(chunk)
        return chunk


def metric_result(status: CacheStatus | None) -> str:
    """The ``result`` label of ``gatekeeper_cache_lookups_total`` for a Cache-Status."""
    if status is None:
        return "bypass"
    if status.detail in {"stale-while-revalidate", "stale-if-error"}:
        return "stale"
    if status.hit:
        return "hit"
    if status.fwd_status == 304:
        return "revalidated"
    if status.fwd in {"method", "bypass"}:
        return "bypass"
    return "miss"


def cache_result(response: ProxyResponse, name: bytes = b"gatekeeper") -> str | None:
    """The metric result (``hit``, ``stale``, ...) of a response the cache answered, read back
    from its ``Cache-Status`` member named ``name``; ``None`` when the cache was not involved.
    For access logs, which see only the response."""
    member = None
    for field_name, field_value in response.headers:
        if field_name == b"cache-status" and field_value.split(b";", 1)[0].strip() == name:
            member = field_value  # the last one of ours is the outermost (RFC 9211 order)
    if member is None:
        return None
    params = [part.strip() for part in member.split(b";")[1:]]
    status = CacheStatus(hit=b"hit" in params)
    for param in params:
        key, _, raw = param.partition(b"=")
        text = raw.decode("latin-1").strip('"')
        if key == b"fwd":
            status.fwd = text
        elif key == b"fwd-status" and text.isdigit():
            status.fwd_status = int(text)
        elif key == b"detail":
            status.detail = text
    return metric_result(status)


class GatewayCache:
    """Satisfies the pipeline's ``ResponseCache`` protocol around an :class:`HttpCache`.

    ``metrics`` is the process's ``gatekeeper.observability.metrics.Metrics`` (anything with a
    ``cache(route, result)`` method), or ``None``.
    """

    def __init__(self, cache: HttpCache, *, metrics: Any = None, config: Any = None) -> None:
        self.cache = cache
        self.metrics = metrics
        self.config = config  # the CacheConfig it was built from, to reuse it across reloads
        self._keys: dict[tuple[Any, str, bytes], str] = {}

    def stats(self) -> dict[str, Any]:
        """A JSON snapshot for ``/stats``: counters and the store's occupancy."""
        body: dict[str, Any] = dict(self.cache.stats.as_dict())
        body["by_status"] = dict(self.cache.stats.by_status)
        store = self.cache.store
        body["store"] = type(store).__name__
        for name in ("total_bytes", "evictions", "responses"):
            if hasattr(store, name):
                body[name] = getattr(store, name)
        if isinstance(store, Sized):
            body["records"] = len(store)
        return body

    def fresh_hit(self, request: ProxyRequest) -> StoredAnswer | None:
        """A usable stored answer found without awaiting (see :meth:`HttpCache.fresh_hit`);
        ``None``: call :meth:`handle`.

        A request without cache directives, validators or a range (the common one) is answered
        from the entry's pre-encoded fields, without converting the request or the response;
        the others go through :meth:`HttpCache.fresh_hit`. Both give the bytes :meth:`handle`
        and the pipeline would (a test holds them to it).
        """
        if request.method != "GET" and request.method != "HEAD":
            return None
        route = request.route
        for name, _ in request.headers:
            if name in _DIRECTIVES:
                return self._converted_hit(request, _namespace(route))
        found = self.cache.peek_fresh(self._primary(request, route))
        if found is None:
            return None
        entry, status = found
        if entry.serve_lines is None:
            return None  # fields that do not encode: the cache's general way says what to do
        cache = self.cache
        cache.count_hit(status)
        if self.metrics is not None:
            self.metrics.cache(route.name if route is not None else "", "hit")
        lines = b"%bage: %d\r\ncache-status: %b\r\n" % (
            entry.serve_lines,
            int(entry.age(cache.clock.now())),
            status.render(cache.options.name).encode("latin-1"),
        )
        body = entry.body
        return StoredAnswer(
            entry.status, lines, b"" if request.method == "HEAD" else body, len(body)
        )

    def _converted_hit(self, request: ProxyRequest, namespace: str) -> StoredAnswer | None:
        answer = self.cache.fresh_hit(_cache_request(request), namespace=namespace)
        if answer is None:
            return None
        route = request.route
        if self.metrics is not None:
            self.metrics.cache(route.name if route is not None else "", "hit")
        length: int | None = None
        lines: list[bytes] = []
        for key, value in answer.headers:
            name = key.lower().encode("latin-1")
            if name == b"content-length":
                length = int(value)
            elif name not in _FRAMING:
                lines += (name, b": ", value.encode("latin-1"), b"\r\n")
        return StoredAnswer(answer.status, b"".join(lines), answer.content or b"", length)

    def _primary(self, request: ProxyRequest, route: Any) -> str:
        """The URI key of ``request`` (remembered: a digest per request costs more)."""
        memo = (route, request.host, request.target)
        key = self._keys.get(memo)
        if key is None:
            if len(self._keys) >= 4096:
                self._keys.clear()
            target = request.target.decode("latin-1")
            key = primary_key(CacheRequest("GET", request.host, target), _namespace(route))
            self._keys[memo] = key
        return key

    async def handle(self, request: ProxyRequest, forward: Forward) -> ProxyResponse:
        """Answer ``request`` from the cache, or through ``forward``."""
        route = request.route
        namespace = _namespace(route)
        cache_request = _cache_request(request)
        upstream_info: dict[str, str] = {}

        async def forward_adapted(outgoing: CacheRequest) -> CacheResponse:
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in outgoing.headers]
            upstream_request = request.replace_headers(headers)
            upstream_request.method = outgoing.method
            response = await forward(upstream_request)
            upstream_info["upstream"] = response.upstream
            fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
            if response.body.length is not None:
                fields.append(("content-length", str(response.body.length)))
            if response.body.complete:  # the body came with the head: no streaming needed
                data = response.body.take()
                return CacheResponse(response.status, fields, iterate_once(data), data)
            return CacheResponse(response.status, fields, _iterate(response.body))

        answer = await self.cache.handle(cache_request, forward_adapted, namespace=namespace)
        if self.metrics is not None:
            label = route.name if route is not None else ""
            self.metrics.cache(label, metric_result(answer.cache_status))
        return _to_proxy_response(answer, request, upstream_info.get("upstream", ""))

    async def aclose(self) -> None:
        """Stop background refreshes and close the store."""
        await self.cache.aclose()


class StoredAnswer(NamedTuple):
    """A hit ready to write (see :meth:`GatewayCache.fresh_hit`): the status, the header lines
    (``name: value\\r\\n``, framing excluded), the body (empty for HEAD) and the
    Content-Length to announce (``None``: none, as for a 304)."""

    status: int
    lines: bytes
    body: bytes
    length: int | None


def _namespace(route: Any) -> str:
    policy = route.cache if route is not None else None
    if isinstance(policy, RouteCache):
        return policy.namespace
    return str(route.name) if route is not None else ""


def _cache_request(request: ProxyRequest) -> CacheRequest:
    route = request.route
    policy = route.cache if route is not None else None
    return CacheRequest(
        request.method,
        request.host,
        request.target.decode("latin-1"),
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers],
        default_ttl=policy.default_ttl if isinstance(policy, RouteCache) else None,
    )


async def _iterate(body: Body) -> AsyncIterator[bytes]:
    while chunk := await body.read():
        yield chunk


def _to_proxy_response(
    answer: CacheResponse, request: ProxyRequest, upstream: str
) -> ProxyResponse:
    length: int | None = None
    headers = []
    for key, value in answer.headers:
        name = key.lower().encode("latin-1")
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name not in _FRAMING:
            headers.append((name, value.encode("latin-1")))
    body: Body
    if answer.content is None:
        body = _PulledBody(answer.body, length)
    elif request.method == "HEAD":
        body = Body(length)  # no bytes, but the writer announces the GET body's length
        body.feed_eof()
    else:
        body = Body.of(answer.content)
    return ProxyResponse(answer.status, headers, body, upstream=upstream)
