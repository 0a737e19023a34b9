"""The network of an address for "one key from many networks", and the allow-list."""

from __future__ import annotations

import pytest

from gatekeeper.abuse.allow import AllowList
from gatekeeper.abuse.networks import network_of


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.7", "203.0.113.0/24"),
        ("203.0.113.255", "203.0.113.0/24"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),  # an IPv4 client on a dual-stack socket
        ("not-an-address", "not-an-address"),
    ],
)
def test_network_of(address: str, network: str) -> None:
    assert network_of(address) == network


def test_allow_list() -> None:
    allow = AllowList(["10.0.0.0/8", "2001:db8::/32"], ["k1"])
    assert allow.allows("ip:10.2.3.4")
    assert allow.allows("ip:2001:db8::1")
    assert not allow.allows("ip:11.0.0.1")
    assert not allow.allows("ip:garbage")
    assert allow.allows("key:k1")
    assert not allow.allows("key:k2")
    assert not allow.allows("account:k1")  # accounts are never allowed by these lists
    assert not AllowList().allows("ip:10.2.3.4")
