"""A route's header rewrites: fields set or removed on the way to the upstream or back.

``request_headers`` edit what the upstream receives, ``response_headers`` what the client
receives from the upstream (or the cache); answers the gateway makes itself (429, 502...) are
left alone. Names are case-insensitive; ``set`` replaces every field of that name (or adds it),
``remove`` drops them. Fields the proxy owns cannot be edited: the framing and hop-by-hop
fields, ``Host`` (see ``preserve_host``) and the forwarding fields on requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gatekeeper.errors import ConfigurationError

__all__ = ["HeaderRules", "header_rules"]

Headers = list[tuple[bytes, bytes]]

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_OWNED = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
     "content-length", "proxy-connection"}
)  # fmt: skip
_OWNED_ON_REQUESTS = _OWNED | {
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
}


@dataclass(frozen=True, slots=True)
class HeaderRules:
    """Fields to drop (every name set or removed) and fields to add, as wire bytes."""

    drop: frozenset[bytes]
    add: tuple[tuple[bytes, bytes], ...]

    def apply(self, headers: Headers) -> Headers:
        """``headers`` with the rules applied (a new list)."""
        drop = self.drop
        return [h for h in headers if h[0] not in drop] + list(self.add)


def header_rules(
    where: str, set_: Mapping[str, str], remove: Iterable[str], *, request: bool
) -> HeaderRules | None:
    """Validated rules (``None`` when there are none); ``where`` names the field in errors."""
    owned = _OWNED_ON_REQUESTS if request else _OWNED
    drop: set[bytes] = set()
    add: list[tuple[bytes, bytes]] = []
    for name in [*set_, *remove]:
        lowered = name.lower()
        if not _TOKEN.match(name):
            raise ConfigurationError(f"{where}: {name!r} is not a header field name")
        if lowered in owned:
            raise ConfigurationError(f"{where}: {name!r} is managed by the proxy itself")
        drop.add(lowered.encode("latin-1"))
    for name, value in set_.items():
        if "\r" in value or "\n" in value or "\0" in value:
            raise ConfigurationError(f"{where}: the value of {name!r} contains a control byte")
        try:
            encoded = value.encode("latin-1")
        except UnicodeEncodeError:
            raise ConfigurationError(f"{where}: the value of {name!r} is not Latin-1") from None
        add.append((name.lower().encode("latin-1"), encoded))
    if not drop:
        return None
    return HeaderRules(frozenset(drop), tuple(add))
