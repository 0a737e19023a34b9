"""Client IP: the socket peer, X-Forwarded-For believed only from trusted proxies."""

from __future__ import annotations

import pytest

from gatekeeper.client_ip import TrustedProxies
from gatekeeper.errors import ConfigurationError


def test_untrusted_peer_header_ignored() -> None:
    """A client that is not a trusted proxy cannot choose its IP."""
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert trusted.client_ip("203.0.113.7", b"1.2.3.4") == "203.0.113.7"


def test_no_trusted_proxies_ignores_header() -> None:
    """With no trusted proxies configured the header is never read."""
    assert TrustedProxies().client_ip("127.0.0.1", b"1.2.3.4") == "127.0.0.1"


def test_rightmost_untrusted_hop_is_the_client() -> None:
    """Walking right to left, trusted hops are skipped and the first untrusted one wins
    (a spoofed leftmost entry is never reached)."""
    trusted = TrustedProxies(["10.0.0.0/8", "192.168.0.0/16"])
    header = b"6.6.6.6, 203.0.113.7, 10.1.1.1, 192.168.3.4"
    assert trusted.client_ip("10.0.0.2", header) == "203.0.113.7"


def test_all_hops_trusted_gives_leftmost() -> None:
    """If every hop is trusted, the leftmost address is the client."""
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert trusted.client_ip("10.0.0.2", b"10.9.9.9, 10.1.1.1") == "10.9.9.9"


def test_garbage_hop_stops_the_walk() -> None:
    """A malformed entry is not believed: the last good hop is the client."""
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert trusted.client_ip("10.0.0.2", b"1.2.3.4, bogus") == "10.0.0.2"


def test_ports_brackets_and_ipv6() -> None:
    """Entries with ports, brackets and IPv6 (also v4-mapped peers) are understood."""
    trusted = TrustedProxies(["10.0.0.0/8", "2001:db8::/32"])
    assert trusted.client_ip("2001:db8::1", b'"[2001:db9::5]:443"') == "2001:db9::5"
    assert trusted.client_ip("::ffff:10.0.0.1", b"198.51.100.1:8080") == "198.51.100.1"


def test_bad_cidr_is_a_configuration_error() -> None:
    """A malformed CIDR is refused naming it."""
    with pytest.raises(ConfigurationError, match="not-a-cidr"):
        TrustedProxies(["not-a-cidr"])
