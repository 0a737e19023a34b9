"""The upstream request head the proxy builds: hop-by-hop removal and forwarding headers."""

from __future__ import annotations

from gatekeeper.client_ip import TrustedProxies
from gatekeeper.gateway.flow.routing import Route
from gatekeeper.gateway.http.messages import Body, ProxyRequest
from gatekeeper.gateway.upstream.proxy import Proxy


def _head(headers: list[tuple[bytes, bytes]], *, peer: str = "203.0.113.7",
          trusted: tuple[str, ...] = (), host: str = "example.com",
          route: Route | None = None) -> list[bytes]:  # fmt: skip
    request = ProxyRequest(
        "GET", b"/api/x?y=1", "/api/x", headers, Body.of(b""),
        host=host, client_ip=peer, peer_ip=peer, route=route or Route("r", "u", "/api"),
    )  # fmt: skip
    head = Proxy({}, TrustedProxies(trusted)).request_head(request, b"content-length: 0\r\n")
    assert head.endswith(b"\r\n\r\n")
    return head.split(b"\r\n")[:-2]


def test_hop_by_hop_and_connection_listed_headers_are_dropped() -> None:
    """Connection, what it lists, Keep-Alive, TE, Trailer, Upgrade, Proxy-* and the client's
    framing never reach the upstream; end-to-end headers do, once."""
    lines = _head([
        (b"connection", b"close, x-private"), (b"x-private", b"1"), (b"keep-alive", b"5"),
        (b"te", b"trailers"), (b"trailer", b"x"), (b"upgrade", b"h2c"),
        (b"proxy-authorization", b"secret"), (b"transfer-encoding", b"chunked"),
        (b"content-length", b"10"), (b"accept", b"*/*"),
    ])  # fmt: skip
    assert lines[0] == b"GET /api/x?y=1 HTTP/1.1"
    names = [line.split(b":", 1)[0] for line in lines[1:]]
    assert b"accept" in names
    for dropped in (b"connection", b"x-private", b"keep-alive", b"te", b"trailer", b"upgrade",
                    b"proxy-authorization", b"transfer-encoding"):  # fmt: skip
        assert dropped not in names, dropped
    assert names.count(b"content-length") == 1
    assert b"content-length: 0" in lines


def test_untrusted_peer_forwarding_headers_are_replaced() -> None:
    """A client's own X-Forwarded-* and Forwarded are replaced by what the gateway saw."""
    lines = _head([(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-proto", b"https"),
                   (b"x-forwarded-host", b"evil"), (b"forwarded", b"for=1.1.1.1")])  # fmt: skip
    assert b"x-forwarded-for: 203.0.113.7" in lines
    assert b"x-forwarded-proto: http" in lines
    assert b"x-forwarded-host: example.com" in lines
    assert b'forwarded: for=203.0.113.7;proto=http;host="example.com"' in lines


def test_trusted_peer_chain_is_extended() -> None:
    """From a trusted proxy the chains are kept and extended with the peer."""
    lines = _head(
        [(b"x-forwarded-for", b"198.51.100.1"), (b"x-forwarded-proto", b"https"),
         (b"forwarded", b"for=198.51.100.1")],
        peer="10.0.0.2", trusted=("10.0.0.0/8",),
    )  # fmt: skip
    assert b"x-forwarded-for: 198.51.100.1, 10.0.0.2" in lines
    assert b"x-forwarded-proto: https" in lines
    assert b'forwarded: for=198.51.100.1, for=10.0.0.2;proto=http;host="example.com"' in lines


def test_forwarded_quotes_ipv6_and_escapes_host() -> None:
    """RFC 7239: an IPv6 node is bracketed and quoted; a host with a quote is escaped."""
    lines = _head([], peer="2001:db8::1", host='we"ird')
    assert b'forwarded: for="[2001:db8::1]";proto=http;host="we\\"ird"' in lines


def test_strip_prefix_and_endpoint_host() -> None:
    """strip_prefix removes the route's prefix; preserve_host=False leaves Host to the
    endpoint."""
    route = Route("r", "u", "/api", strip_prefix=True, preserve_host=False)
    lines = _head([], route=route)
    assert lines[0] == b"GET /x?y=1 HTTP/1.1"
    assert not any(line.startswith(b"host:") for line in lines)
