"""Key functions: who is the subject of a limit (an IP, an API key, a user, anything).

A key function takes a :class:`RequestView` and returns the subject key (``"ip:203.0.113.7"``)
or ``None`` to leave the request unlimited by that policy (e.g. no API key was sent). Any
callable of that shape works, sync or ``async``.

The client IP comes from the socket. ``X-Forwarded-For`` is believed only when the socket peer is
a trusted proxy, and then walked right to left, skipping trusted hops: the first untrusted address
is the client. Anything else would let a client choose its own key by sending a header. (The
rules live in :class:`gatekeeper.client_ip.TrustedProxies`, shared with the gateway.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Imported for typing only: the gateway depends on the limits, never the other way round.
    from gatekeeper.client_ip import TrustedProxies

__all__ = [
    "KeyFunc",
    "RequestView",
    "by_api_key",
    "by_header",
    "by_ip",
    "by_user",
    "client_ip",
    "first_of",
    "parse_trusted_proxies",
]

Scope = MutableMapping[str, Any]
KeyFunc = Callable[["RequestView"], "str | Awaitable[str | None] | None"]


def parse_trusted_proxies(cidrs: Sequence[str]) -> TrustedProxies:
    """Parse trusted proxy CIDRs; a bad entry raises ConfigurationError."""
    from gatekeeper.client_ip import TrustedProxies

    return TrustedProxies(cidrs)


def client_ip(scope: Scope, trusted_proxies: TrustedProxies | None = None) -> str:
    """The client's IP for an ASGI scope (see the module docstring for the trust rules)."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not trusted_proxies:
        return peer
    forwarded: bytes | None = None
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            # Several header lines are one comma-separated list, in order.
            forwarded = value if forwarded is None else forwarded + b"," + value
    return trusted_proxies.client_ip(peer, forwarded)


class RequestView:
    """What key functions see of a request: the ASGI scope plus the resolved client IP."""

    __slots__ = ("_headers", "client_ip", "scope")

    def __init__(self, scope: Scope, client_ip: str) -> None:
        self.scope = scope
        self.client_ip = client_ip
        self._headers: dict[str, str] | None = None

    @property
    def path(self) -> str:
        return str(self.scope.get("path", ""))

    @property
    def method(self) -> str:
        return str(self.scope.get("method", "GET"))

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name (the last one wins), or ``None``."""
        if self._headers is None:
            self._headers = {
                k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in self.scope.get("headers", ())
            }
        return self._headers.get(name.lower())

    def query(self, name: str) -> str | None:
        """A query-string parameter, or ``None``."""
        from urllib.parse import parse_qs

        raw = self.scope.get("query_string", b"")
        values = parse_qs(raw.decode("latin-1")).get(name)
        return values[-1] if values else None


def by_ip(request: RequestView) -> str:
    """Limit by client IP: ``"ip:<address>"``."""
    return f"ip:{request.client_ip}"


def _digest(secret: str) -> str:
    # Never put a credential into a Redis key name (keys show up in MONITOR, SCAN, dumps).
    return hashlib.blake2b(secret.encode(), digest_size=12).hexdigest()


def by_api_key(header: str = "x-api-key", query_param: str | None = "api_key") -> KeyFunc:
    """Limit by API key from ``header`` (or the ``query_param``); the key is hashed.

    Requests without a key are not limited by this function (combine with :func:`first_of`).
    """

    def key(request: RequestView) -> str | None:
        value = request.header(header)
        if not value and query_param:
            value = request.query(query_param)
        return f"key:{_digest(value)}" if value else None

    return key


def by_header(name: str, *, prefix: str | None = None, hashed: bool = False) -> KeyFunc:
    """Limit by the value of any header (``by_header("x-tenant")``)."""
    label = prefix or name.lower()

    def key(request: RequestView) -> str | None:
        value = request.header(name)
        if not value:
            return None
        return f"{label}:{_digest(value) if hashed else value}"

    return key


def by_user(request: RequestView) -> str | None:
    """Limit by authenticated user: ``scope["user"]`` (Starlette auth) or ``state["principal"]``.

    Uses the object's ``id``, ``identity`` or ``username`` attribute, or the value itself.
    """
    state = request.scope.get("state") or {}
    user = state.get("principal") or state.get("user") or request.scope.get("user")
    if user is None or getattr(user, "is_authenticated", True) is False:
        return None
    for attr in ("id", "identity", "username", "user_id"):
        value = getattr(user, attr, None)
        if value is not None:
            return f"user:{value}"
    return f"user:{user}"


def first_of(*functions: KeyFunc) -> KeyFunc:
    """The first key any of ``functions`` gives (``first_of(by_api_key(), by_ip)``)."""

    async def key(request: RequestView) -> str | None:
        for function in functions:
            value = function(request)
            if value is not None and not isinstance(value, str):
                value = await value
            if value:
                return value
        return None

    return key
