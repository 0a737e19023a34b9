"""The network an address belongs to for "one key from many networks": /24 (IPv4), /64 (IPv6).

Addresses of one home or office share these; a key seen from many of them at once is shared
or stolen. Memoized: the same few addresses come back all the time.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

__all__ = ["network_of"]


@lru_cache(maxsize=65_536)
def network_of(address: str) -> str:
    """``"203.0.113.0/24"`` for ``"203.0.113.7"``; the address itself if it is not one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
