"""The proxy: what a client request becomes on its way upstream, and how attempts are judged.

What crosses the proxy (RFC 9110 7.6, RFC 9112):

- hop-by-hop headers are dropped both ways: ``Connection`` and every header it lists,
  ``Keep-Alive``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``; the body
  is re-framed for each side (Content-Length when known, else chunked);
- ``X-Forwarded-For``/``-Proto``/``-Host`` and ``Forwarded`` (RFC 7239) are set; values
  arriving from the client are kept (and appended to) only when the peer is a trusted proxy,
  otherwise they are replaced, so the upstream never sees a client's forgery;
- ``Expect: 100-continue`` is answered by the gateway itself when it starts reading the body;
  other interim responses (103 Early Hints, 102) are passed on to HTTP/1.1 clients;
- a WebSocket handshake keeps its ``Connection: upgrade`` and ``Upgrade`` (hop-by-hop, so they
  are re-sent for the next hop): a 101 answer switches the client connection to a tunnel.

Endpoint choice, retries and accounting go through the pool (``pick``/``on_start``/
``on_finish``/``retry_budget``), connections through :class:`ConnectionPool` per endpoint; the
attempts themselves are :class:`~gatekeeper.gateway.upstream.forward.Forwarding`'s.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

from gatekeeper.client_ip import TrustedProxies
from gatekeeper.errors import UpstreamError, UpstreamTimeout
from gatekeeper.gateway.http.messages import Body, Headers, ProxyRequest
from gatekeeper.gateway.http.writer import HOP_BY_HOP
from gatekeeper.gateway.upstream.connections import ConnectionPool, Watchdog

__all__ = ["Proxy"]

# Request headers the proxy rewrites itself.
_REWRITTEN = HOP_BY_HOP | {
    b"host",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
}
_IDEMPOTENT_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})


def _listed(headers: Headers) -> frozenset[bytes] | None:
    """Header names listed in Connection (they are hop-by-hop too), or None."""
    names: set[bytes] | None = None
    for name, value in headers:
        if name == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token and token not in (b"keep-alive", b"close"):
                    names = names or set()
                    names.add(token)
    return frozenset(names) if names else None


def _node(ip: str) -> str:
    return f'"[{ip}]"' if ":" in ip else ip


class Proxy:
    """Forwards requests to the pools' endpoints over keep-alive connections."""

    def __init__(
        self,
        pools: dict[str, Any],
        trusted: TrustedProxies,
        *,
        max_idle: int = 128,
        idle_timeout: float = 60.0,
    ) -> None:
        self.pools = pools
        self.trusted = trusted
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._connections: dict[tuple[str, int, ssl.SSLContext | None], ConnectionPool] = {}
        self.watchdog = Watchdog()
        self._forwarding_lines: dict[tuple[str, str, str], bytes] = {}

    def connections(self, endpoint: Any) -> ConnectionPool:
        """The connection pool of one endpoint (created on first use)."""
        key = (endpoint.host, endpoint.port, endpoint.tls)
        pool = self._connections.get(key)
        if pool is None:
            pool = self._connections[key] = ConnectionPool(
                endpoint.host,
                endpoint.port,
                max_idle=self.max_idle,
                idle_timeout=self.idle_timeout,
                watchdog=self.watchdog,
                tls=endpoint.tls,
                server_name=endpoint.server_name,
            )
        return pool

    def stats(self) -> dict[str, dict[str, int]]:
        """Per endpoint: connections opened, reuses, idle now."""
        return {
            pool.address: {"opened": pool.opened, "reused": pool.reused, "idle": pool.idle}
            for pool in self._connections.values()
        }

    def close(self) -> None:
        """Close every idle upstream connection."""
        for pool in self._connections.values():
            pool.close()

    # -- the request head ------------------------------------------------------------------
    def request_head(self, request: ProxyRequest, framing: bytes) -> bytes:
        """The upstream request head: rewritten headers plus ``framing`` (CL/TE lines)."""
        route = request.route
        target = request.target
        if route is not None and route.strip_prefix and route.path_prefix != "/":
            rest = target[len(route.path_prefix) :]
            target = rest if rest.startswith(b"/") else b"/" + rest
        parts = [request.method.encode(), b" ", target, b" HTTP/1.1\r\n"]
        headers = request.headers
        if route is not None and route.request_headers is not None:
            headers = route.request_headers.apply(headers)
        listed = _listed(headers)
        xff = xfp = xfh = fwd = None
        for name, value in headers:
            if name in _REWRITTEN:
                if name == b"x-forwarded-for":
                    xff = value if xff is None else xff + b", " + value
                elif name == b"x-forwarded-proto":
                    xfp = value
                elif name == b"x-forwarded-host":
                    xfh = value
                elif name == b"forwarded":
                    fwd = value if fwd is None else fwd + b", " + value
                continue
            if name.startswith(b"proxy-") or (listed is not None and name in listed):
                continue
            parts += (name, b": ", value, b"\r\n")
        host = request.host
        # Without preserve_host the endpoint's address is inserted per attempt instead.
        if host and (route is None or route.preserve_host):
            parts += (b"host: ", host.encode("latin-1"), b"\r\n")
        peer = request.peer_ip
        trusted = bool(self.trusted) and self.trusted.is_trusted(peer)
        if trusted and (xff is not None or xfp is not None or xfh is not None or fwd is not None):
            parts.append(self._forwarding(request, xff, xfp, xfh, fwd))
        else:
            # The common case: the forwarding lines depend only on the peer, the host and the
            # scheme, which repeat across a keep-alive connection: build them once.
            key = (peer, host, request.scheme)
            lines = self._forwarding_lines.get(key)
            if lines is None:
                if len(self._forwarding_lines) >= 4096:
                    self._forwarding_lines.clear()
                lines = self._forwarding_lines[key] = self._forwarding(
                    request, None, None, None, None
                )
            parts.append(lines)
        if request.upgrade is not None:
            parts += (b"connection: upgrade\r\nupgrade: ", request.upgrade, b"\r\n")
        parts += (framing, b"\r\n")
        return b"".join(parts)

    @staticmethod
    def _forwarding(
        request: ProxyRequest,
        xff: bytes | None,
        xfp: bytes | None,
        xfh: bytes | None,
        fwd: bytes | None,
    ) -> bytes:
        """X-Forwarded-For/-Proto/-Host and Forwarded lines; incoming values (only passed
        when the peer is trusted) are kept and extended."""
        peer = request.peer_ip
        host = request.host
        peer_b = peer.encode()
        parts: list[bytes] = []
        if xff is not None:
            parts += (b"x-forwarded-for: ", xff, b", ", peer_b, b"\r\n")
        else:
            parts += (b"x-forwarded-for: ", peer_b, b"\r\n")
        proto = xfp if xfp is not None else request.scheme.encode()
        parts += (b"x-forwarded-proto: ", proto, b"\r\n")
        fhost = xfh if xfh is not None else host.encode("latin-1")
        if fhost:
            parts += (b"x-forwarded-host: ", fhost, b"\r\n")
        element = f"for={_node(peer)};proto={request.scheme}"
        if host:
            quoted = host.replace("\\", "\\\\").replace('"', '\\"')
            element += f';host="{quoted}"'
        if fwd is not None:
            parts += (b"forwarded: ", fwd, b", ", element.encode("latin-1"), b"\r\n")
        else:
            parts += (b"forwarded: ", element.encode("latin-1"), b"\r\n")
        return b"".join(parts)

    # -- forwarding ------------------------------------------------------------------------
    def prepare(self, request: ProxyRequest) -> tuple[bytes, bytes, bool]:
        """The upstream request head, the body bytes sent with it, and whether the request can
        be replayed (its body is complete, so another attempt can resend it)."""
        body = request.body
        method = request.method
        replayable = body.complete
        if replayable:
            data = body.take()
            if data:
                request.body = Body.of(data)
            if data or method not in _IDEMPOTENT_NO_BODY:
                framing = b"content-length: %d\r\n" % len(data)
            else:
                framing = b""
        else:
            data = b""
            if body.length is not None:
                framing = b"content-length: %d\r\n" % body.length
            else:
                framing = b"transfer-encoding: chunked\r\n"
        return self.request_head(request, framing), data, replayable

    @staticmethod
    def failed(
        request: ProxyRequest,
        pool: Any,
        endpoint: Any,
        exc: UpstreamError,
        elapsed: float,
        attempt: int,
        attempts: int,
    ) -> bool:
        """Account an attempt that got no response; whether to retry on another endpoint."""
        pool.on_finish(endpoint, status=None, error=True, latency=elapsed)
        timeout = isinstance(exc, UpstreamTimeout)
        _observe(pool, endpoint, "timeout" if timeout else "connect_error", elapsed, attempt)
        retry = request.route.retry
        wanted = retry.on_timeout if timeout else retry.on_connect_error
        return bool(wanted and attempt < attempts and pool.retry_budget.allow_retry())

    @staticmethod
    def answered(
        request: ProxyRequest,
        pool: Any,
        endpoint: Any,
        status: int,
        started: float,
        attempt: int,
        attempts: int,
    ) -> bool:
        """Account an attempt whose response head arrived; whether to discard it and retry
        on another endpoint (a retryable status within the retry budget)."""
        elapsed = time.monotonic() - started
        pool.on_finish(endpoint, status=status, error=status >= 500, latency=elapsed)
        _observe(pool, endpoint, "http_5xx" if status >= 500 else "ok", elapsed, attempt)
        retry = request.route.retry
        return status in retry.on_status and attempt < attempts and pool.retry_budget.allow_retry()

    @staticmethod
    def with_host(head: bytes, endpoint: Any) -> bytes:
        line_end = head.index(b"\r\n") + 2
        return b"%bhost: %b\r\n%b" % (head[:line_end], endpoint.host_header, head[line_end:])


def _observe(pool: Any, endpoint: Any, outcome: str, seconds: float, attempt: int) -> None:
    """Record one attempt (time to the response head) on the pool's metrics, if bound."""
    metrics = getattr(pool, "metrics", None)
    if metrics is not None:
        address = getattr(endpoint, "address", None) or f"{endpoint.host}:{endpoint.port}"
        metrics.upstream_attempt(pool.name, address, outcome, seconds, retry=attempt > 1)
