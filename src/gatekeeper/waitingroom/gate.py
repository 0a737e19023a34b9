"""Protect a route with a waiting room: visitors without a ready token wait on the hosted page.

The gateway pipeline calls :meth:`WaitingRoomGate.check` for a protected route. A ready token
is looked for in the ``jwt`` header, the ``gk_jwt`` query parameter and the ``gk_wr_<tenant>``
cookie (set by ``client.js`` just before it sends the visitor back). Without one the answer is
a redirect to ``/queue/wait?business_id=<tenant>&return_to=<path>``; the page queues the
visitor, shows position and ETA, and returns them to ``return_to`` when they are admitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlsplit

from gatekeeper.errors import GatekeeperError

if TYPE_CHECKING:
    from gatekeeper.waitingroom.service import WaitingRoomService

__all__ = ["DEGRADED_HEADER", "GateDecision", "WaitingRoomGate", "cookie_name"]

DEGRADED_HEADER = ("Gatekeeper-Waiting-Room", "degraded")
"""On answers that let a visitor in on a ready token alone (the store unreachable): proxied
answers of a protected route and ``/queue/verify``."""


def cookie_name(tenant: str) -> str:
    """The cookie carrying a visitor's queue token for ``tenant``."""
    return "gk_wr_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in tenant)


@dataclass(frozen=True, slots=True)
class GateDecision:
    """``allowed``, or else ``redirect`` (a relative URL for a 302/303 ``Location``).
    ``degraded``: allowed on the strength of a ready token alone, the store being unreachable;
    ``headers`` (lower-case bytes) are added to the answer, saying so."""

    allowed: bool
    redirect: str | None = None
    degraded: bool = False
    headers: tuple[tuple[bytes, bytes], ...] = ()


_ALLOWED = GateDecision(True)
_DEGRADED = GateDecision(
    True,
    degraded=True,
    headers=((DEGRADED_HEADER[0].lower().encode(), DEGRADED_HEADER[1].encode()),),
)


class WaitingRoomGate:
    """The waiting-room step of the request path for one tenant."""

    def __init__(
        self, service: WaitingRoomService, tenant: str, *, wait_path: str = "/queue/wait"
    ) -> None:
        self.service = service
        self.tenant = tenant
        self.wait_path = wait_path
        self.cookie = cookie_name(tenant)

    def token_of(self, headers: Mapping[str, str], cookies: Mapping[str, str], target: str) -> str:
        """The queue token the request carries, or ``""``."""
        token = headers.get("jwt", "")
        if not token:
            query = urlsplit(target).query
            token = parse_qs(query).get("gk_jwt", [""])[0] if query else ""
        return token or cookies.get(self.cookie, "")

    async def check(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], target: str
    ) -> GateDecision:
        """Allow a request whose token is ready; send others to the waiting page.

        ``headers`` (lower-case names) and ``cookies`` are the request's; ``target`` is its
        path and query, used as the way back. While the store is unreachable, a valid ready
        token still passes (``degraded``); anyone else is sent to the page, which answers 503
        with ``Retry-After`` until the store is back.
        """
        token = self.token_of(headers, cookies, target)
        if token:
            try:
                verdict = await self.service.verification(self.tenant, token)
            except GatekeeperError:
                pass  # forged, expired or unknown (or no store): the visitor queues (again)
            else:
                if verdict.ready:
                    return _DEGRADED if verdict.degraded else _ALLOWED
        back = quote(target if target.startswith("/") else "/", safe="")
        return GateDecision(
            False, f"{self.wait_path}?business_id={quote(self.tenant, safe='')}&return_to={back}"
        )

    async def check_headers(
        self, headers: Iterable[tuple[bytes, bytes]], target: bytes | str
    ) -> GateDecision:
        """:meth:`check` for raw ASGI/gateway headers (lower-case byte names)."""
        jwt = ""
        cookies: dict[str, str] = {}
        for name, value in headers:
            if name == b"jwt":
                jwt = value.decode("latin-1")
            elif name == b"cookie" and self.cookie.encode() in value:
                try:
                    jar = SimpleCookie(value.decode("latin-1"))
                except CookieError:
                    continue
                if self.cookie in jar:
                    cookies[self.cookie] = jar[self.cookie].value
        path = target.decode("latin-1") if isinstance(target, bytes) else target
        return await self.check({"jwt": jwt} if jwt else {}, cookies, path)
