"""What a balancing strategy may read of a request.

Hash strategies key on the client address or a header; the gateway's request object satisfies
:class:`BalanceContext` as it is (no per-request allocation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["BalanceContext", "RequestContext"]


class BalanceContext(Protocol):
    """What hash strategies read from a request. The gateway's request object satisfies it
    as is (no per-request allocation); :class:`RequestContext` builds one by hand."""

    client_ip: str
    headers: list[tuple[bytes, bytes]]  # lower-case names, as the gateway stores them


class RequestContext:
    """A :class:`BalanceContext` for callers without a gateway request (tests, library)."""

    __slots__ = ("client_ip", "headers")

    def __init__(
        self, client_ip: str = "", headers: Sequence[tuple[bytes | str, bytes | str]] = ()
    ) -> None:
        self.client_ip = client_ip
        self.headers = [
            (
                (n if isinstance(n, bytes) else n.encode("latin-1")).lower(),
                v if isinstance(v, bytes) else v.encode("latin-1"),
            )
            for n, v in headers
        ]
