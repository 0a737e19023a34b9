"""The waiting room's hot endpoints as gateway native handlers (``gateway/builtin/native.py``).

``POST /queue/enqueue``, ``GET /queue/status`` and ``GET /queue/verify`` answered straight from
the gateway's parsed request: no ASGI scope, no Starlette routing or middleware. The answers
are built by the same functions as the FastAPI routes' (``replies.py``), so both paths agree;
the caller's address is the gateway's resolved client IP (what the routes see as
``client.host``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatekeeper.waitingroom.replies import Reply, enqueue_reply, status_reply, verify_reply

if TYPE_CHECKING:
    from gatekeeper.gateway.builtin.native import NativeReply, NativeTable
    from gatekeeper.gateway.http.messages import Headers, ProxyRequest
    from gatekeeper.waitingroom.service import WaitingRoomService

__all__ = ["register_native"]


def _text(request: ProxyRequest, name: bytes) -> str | None:
    value = request.header(name)
    return None if value is None else value.decode("latin-1")


def _native(reply: Reply) -> NativeReply:
    status, body, extra = reply
    headers: Headers = []
    if extra:
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    headers.append((b"content-type", b"application/json"))
    return status, headers, body


def register_native(table: NativeTable, service: WaitingRoomService) -> None:
    """Put the waiting room's hot endpoints in the gateway's native handler ``table``."""

    async def enqueue(request: ProxyRequest) -> NativeReply:
        tenant = _text(request, b"business_id") or ""
        user = _text(request, b"user_id")
        return _native(await enqueue_reply(service, tenant, user, request.client_ip))

    async def status(request: ProxyRequest) -> NativeReply:
        tenant = _text(request, b"business_id") or ""
        token = _text(request, b"jwt")
        return _native(await status_reply(service, tenant, token, request.client_ip))

    async def verify(request: ProxyRequest) -> NativeReply:
        tenant = _text(request, b"business_id") or ""
        token = _text(request, b"jwt")
        authorization = _text(request, b"authorization")
        return _native(await verify_reply(service, tenant, token, authorization))

    table[("POST", "/queue/enqueue")] = enqueue
    table[("GET", "/queue/status")] = status
    table[("GET", "/queue/verify")] = verify
