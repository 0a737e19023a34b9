"""Who the client is: the socket peer, unless the peer is a proxy we trust.

``X-Forwarded-For`` is a list the client can write anything into; only the hops appended by our
own trusted proxies are believed. The list is walked right to left (the nearest hop first),
skipping addresses inside the trusted CIDRs; the first untrusted address is the client. With no
trusted proxies configured (the default) the header is ignored entirely, so no client can spoof
its way out of a per-IP limit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gatekeeper.errors import ConfigurationError

__all__ = ["TrustedProxies"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """A set of CIDRs whose ``X-Forwarded-For`` hops are believed."""

    __slots__ = ("_cache", "networks")

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        networks: list[_Network] = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError as exc:
                raise ConfigurationError(f"trusted proxy {cidr!r} is not an IP or CIDR") from exc
        self.networks = tuple(networks)
        # Peers repeat (keep-alive, a load balancer in front): remember verdicts, bounded.
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` lies inside one of the trusted networks."""
        if not self.networks:
            return False
        verdict = self._cache.get(address)
        if verdict is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                verdict = False
            else:
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                verdict = any(ip in net for net in self.networks)
            if len(self._cache) >= 4096:
                self._cache.clear()
            self._cache[address] = verdict
        return verdict

    def client_ip(self, peer: str, forwarded_for: bytes | None) -> str:
        """The client's address given the socket ``peer`` and the raw X-Forwarded-For value."""
        if forwarded_for is None or not self.networks or not self.is_trusted(peer):
            return peer
        hops = forwarded_for.decode("latin-1").split(",")
        client = peer
        for hop in reversed(hops):
            address = _strip(hop)
            if not address:
                break
            try:
                ipaddress.ip_address(address)
            except ValueError:
                break  # garbage: stop believing here, the last good hop is the client
            client = address
            if not self.is_trusted(address):
                return address
        return client


def _strip(hop: str) -> str:
    """``" 203.0.113.7 "`` -> ``"203.0.113.7"``; ``"[2001:db8::1]:443"`` -> ``"2001:db8::1"``;
    ``"198.51.100.1:8080"`` -> ``"198.51.100.1"``."""
    hop = hop.strip().strip('"')
    if hop.startswith("["):
        end = hop.find("]")
        return hop[1:end] if end != -1 else ""
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop
