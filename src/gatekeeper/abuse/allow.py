"""Who is never flagged: addresses in allowed networks, allowed API key ids."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["AllowList"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AllowList:
    """``allows("ip:10.0.0.1")``, ``allows("key:ab12")``; other subjects are never allowed."""

    def __init__(self, networks: Iterable[Network | str] = (), keys: Iterable[str] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self.keys = frozenset(keys)
        self._address = lru_cache(maxsize=4096)(self._address_allowed)

    def allows(self, subject: str) -> bool:
        kind, _, value = subject.partition(":")
        if kind == "key":
            return value in self.keys
        if kind == "ip" and self.networks:
            return self._address(value)
        return False

    def _address_allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)
