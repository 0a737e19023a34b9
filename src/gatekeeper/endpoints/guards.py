"""Who may call an endpoint: a :class:`Guard` is a value on the endpoint.

A guard's ``check`` takes the :class:`~gatekeeper.endpoints.call.Call` and returns the caller's
principal (anything; the handler finds it in ``call.principal``), or raises
:class:`~gatekeeper.errors.AuthenticationError` (401) or
:class:`~gatekeeper.errors.PermissionDenied` (403). A plain function keeps the endpoint
synchronous; a coroutine function makes it asynchronous. The guard also carries its OpenAPI
description: the security requirement, the schemes it names, and the answers it may give.

Components supply their own guards (identity: user tokens and API keys; the waiting room:
tenant keys) by building :class:`Guard` values; this module has the ones every process needs:

- :data:`PUBLIC`: anyone.
- :func:`admin_token`: ``Authorization: Bearer <GATEKEEPER_ADMIN_TOKEN>``; 401 without
  credentials (with ``WWW-Authenticate``), 403 with wrong ones (or none configured).
- :func:`operator`: the admin token, or a client address inside an allow-list of networks
  (operational pages and figures: dashboards, ``/stats``, ``/metrics``).
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.errors import AuthenticationError, PermissionDenied

__all__ = [
    "ADMIN_SCHEME",
    "PUBLIC",
    "Guard",
    "Networks",
    "admin_token",
    "bearer_of",
    "operator",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Networks = Sequence[Network]

ADMIN_SCHEME: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "description": "The operator's admin token (GATEKEEPER_ADMIN_TOKEN).",
}


@dataclass(frozen=True)
class Guard:
    """An endpoint's access rule and its OpenAPI description.

    ``security`` lists the alternative OpenAPI security requirements (``({"adminToken": []},)``),
    ``schemes`` the security schemes they name, ``responses`` the statuses the guard may answer
    with, and why.
    """

    name: str
    check: Callable[[Any], Any] | None = None
    security: tuple[Mapping[str, Sequence[str]], ...] = ()
    schemes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    responses: Mapping[int, str] = field(default_factory=dict)
    description: str = ""

    is_async: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        # Whether ``check`` is a coroutine function (the endpoint then answers later).
        is_async = self.check is not None and inspect.iscoroutinefunction(self.check)
        object.__setattr__(self, "is_async", is_async)


PUBLIC = Guard("public")


def bearer_of(call: Any) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    value: bytes | None = call.header(b"authorization")
    if not value:
        return None
    scheme, _, token = value.partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token.decode("latin-1")


def _token_matches(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def admin_token(token: Callable[[], str | None]) -> Guard:
    """The admin token guard; ``token()`` is the configured token (None: none configured)."""

    def check(call: Any) -> str:
        given = bearer_of(call)
        if given is None:
            raise AuthenticationError("send Authorization: Bearer <admin token>")
        if not _token_matches(given, token()):
            raise PermissionDenied("the admin token is wrong or not configured")
        return "admin_token"

    return Guard(
        "admin_token",
        check,
        security=({"adminToken": []},),
        schemes={"adminToken": ADMIN_SCHEME},
        responses={401: "No admin token was sent.", 403: "The admin token is wrong."},
    )


def _allowed(address: str, networks: Networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def operator(token: Callable[[], str | None], networks: Callable[[], Networks]) -> Guard:
    """Operational endpoints: a client inside ``networks()`` (the configured allow-list), or
    anyone with the admin token."""
    by_token = admin_token(token).check
    assert by_token is not None
    verdicts: dict[str, bool] = {}
    seen: list[Networks] = []

    def check(call: Any) -> str:
        allow = networks()
        if not seen or seen[0] is not allow:
            # The allow-list changed (a reload): forget the verdicts.
            seen[:] = [allow]
            verdicts.clear()
        address = call.client_ip
        verdict = verdicts.get(address)
        if verdict is None:
            verdict = _allowed(address, allow)
            if len(verdicts) >= 4096:
                verdicts.clear()
            verdicts[address] = verdict
        if verdict:
            return "operator_network"
        return str(by_token(call))

    return Guard(
        "operator",
        check,
        security=({"adminToken": []},),
        schemes={"adminToken": ADMIN_SCHEME},
        responses={
            401: "The client is outside the operator networks and sent no admin token.",
            403: "The client is outside the operator networks and the admin token is wrong.",
        },
        description=(
            "Open to clients inside the configured `operator_networks` (default: loopback); "
            "others need the admin token."
        ),
    )
