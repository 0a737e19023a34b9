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

__all__ = ["GateDecision", "WaitingRoomGate", "cookie_name"]


def cookie_name(tenant: str) -> str:
    """The cookie carrying a visitor's queue token for ``tenant``."""
    return "gk_wr_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in tenant)


@dataclass(frozen=True, slots=True)
class GateDecision:
    """``allowed``, or else ``redirect`` (a relative URL for a 302/303 ``Location``)."""

    allowed: bool
    redirect: str | None = None


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
        path and query, used as the way back.
        """
        token = self.token_of(headers, cookies, target)
        if token:
            try:
                if await self.service.verify(self.tenant, token):
                    return GateDecision(True)
            except GatekeeperError:
                pass  # forged, expired or unknown: the visitor queues (again)
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
