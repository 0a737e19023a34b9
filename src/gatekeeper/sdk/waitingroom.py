"""The backend's side of the waiting room: verify a visitor's token, finish their session.

Standard library only. The synchronous client uses ``http.client``; the asynchronous one speaks
HTTP/1.1 over ``asyncio`` streams itself (no thread pool), one short connection per call.

    room = WaitingRoomClient("http://127.0.0.1:8080", business_id=SHOP_SECRET_KEY)
    if room.verify(token).ready:
        ...              # serve the checkout
        room.finish(token)   # the token never verifies again

    room = AsyncWaitingRoomClient("http://127.0.0.1:8080", business_id=SHOP_SECRET_KEY)
    if (await room.verify(token)).ready: ...

``business_id`` is the tenant's secret key (``gkwr_...``): verify and finish are the backend's
calls, which the public id (what browsers send) cannot make (403).

A forged, expired or foreign token is simply not ready (``status`` says 401); only an
unreachable or broken service raises :class:`WaitingRoomUnavailable`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gatekeeper.errors import ConfigurationError, GatekeeperError

__all__ = [
    "AsyncWaitingRoomClient",
    "FinishResult",
    "VerifyResult",
    "WaitingRoomClient",
    "WaitingRoomUnavailable",
]


class WaitingRoomUnavailable(GatekeeperError):
    """The waiting-room service could not be reached or answered with a server error."""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``ready``: the visitor holds a current, ready session. ``status``: the HTTP status.
    ``degraded``: ready on the strength of the visitor's ready token alone, the waiting room's
    store being unreachable (admitted visitors are not thrown out by an outage)."""

    ready: bool
    message: str
    status: int
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class FinishResult:
    """``cleared``: a ready session was ended now (``status_text`` is ``ready_cleared``)."""

    cleared: bool
    status_text: str
    message: str
    status: int


class _Base:
    def __init__(self, base_url: str, business_id: str, *, timeout: float = 2.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"base_url {base_url!r} must be an http(s) URL")
        if not business_id:
            raise ConfigurationError("business_id is required")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.base_path = parts.path.rstrip("/")
        self.business_id = business_id
        self.timeout = timeout

    def _headers(self, token: str) -> dict[str, str]:
        return {"business_id": self.business_id, "jwt": token, "Accept": "application/json"}

    @staticmethod
    def _parse(status: int, raw: bytes) -> dict[str, Any]:
        if status >= 500:
            raise WaitingRoomUnavailable(f"waiting room answered {status}")
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise WaitingRoomUnavailable(f"waiting room answered {status} without JSON") from exc
        return body if isinstance(body, dict) else {}

    @staticmethod
    def _verify(status: int, body: dict[str, Any]) -> VerifyResult:
        ready = status == 200 and body.get("ready") is True
        message = str(body.get("message") or body.get("detail") or "")
        return VerifyResult(ready, message, status, ready and body.get("degraded") is True)

    @staticmethod
    def _finish(status: int, body: dict[str, Any]) -> FinishResult:
        # (An error answer is a problem document: its ``status`` is the HTTP code.)
        found = body.get("status")
        text = found if isinstance(found, str) else "not_ready"
        message = str(body.get("message") or body.get("detail") or "")
        return FinishResult(status == 200 and text == "ready_cleared", text, message, status)


class WaitingRoomClient(_Base):
    """Blocking client (``http.client``)."""

    def _call(self, method: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
        kind = http.client.HTTPSConnection if self.tls else http.client.HTTPConnection
        conn = kind(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, self.base_path + path, headers=self._headers(token))
            response = conn.getresponse()
            return response.status, self._parse(response.status, response.read())
        except (OSError, http.client.HTTPException) as exc:
            raise WaitingRoomUnavailable(f"waiting room unreachable: {exc}") from exc
        finally:
            conn.close()

    def verify(self, token: str) -> VerifyResult:
        """Is the token's holder admitted right now?"""
        return self._verify(*self._call("GET", "/queue/verify", token))

    def finish(self, token: str) -> FinishResult:
        """End the holder's ready session (call when the protected work is done)."""
        return self._finish(*self._call("DELETE", "/queue/finish", token))


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


class AsyncWaitingRoomClient(_Base):
    """Non-blocking client on ``asyncio`` streams."""

    async def _call(self, method: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(method, path, token)
        except (OSError, TimeoutError, ValueError, IndexError, EOFError) as exc:
            raise WaitingRoomUnavailable(f"waiting room unreachable: {exc!r}") from exc

    async def _exchange(self, method: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
        context = ssl.create_default_context() if self.tls else None
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=context)
        try:
            lines = [f"{method} {self.base_path + path} HTTP/1.1", f"Host: {self.host}"]
            lines += [f"{k}: {v}" for k, v in self._headers(token).items()]
            lines += ["Connection: close", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (h.partition(":") for h in header_lines if h)
            }
            if "chunked" in headers.get("transfer-encoding", ""):
                raw = await _read_chunked(reader)
            elif "content-length" in headers:
                raw = await reader.readexactly(int(headers["content-length"]))
            else:
                raw = await reader.read()
            return status, self._parse(status, raw)
        finally:
            writer.close()

    async def verify(self, token: str) -> VerifyResult:
        """Is the token's holder admitted right now?"""
        return self._verify(*await self._call("GET", "/queue/verify", token))

    async def finish(self, token: str) -> FinishResult:
        """End the holder's ready session (call when the protected work is done)."""
        return self._finish(*await self._call("DELETE", "/queue/finish", token))
