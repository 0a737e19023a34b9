"""Queue status as Server-Sent Events, so that a browser need not poll.

``GET /queue/events?business_id=..&jwt=..`` (``EventSource`` cannot send headers, so the query
string carries them; the headers work too). The server re-reads the status every
``sse_interval_seconds`` — which also keeps the place alive — and sends an ``status`` event
whenever something changed, a comment as heartbeat otherwise. The stream ends after the event
that says ``ready`` (or that the place is gone), or after ``max_seconds``; ``EventSource``
reconnects by itself, and ``retry:`` tells it how soon.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import GatekeeperError

if TYPE_CHECKING:
    from gatekeeper.waitingroom.service import StatusAnswer, WaitingRoomService

__all__ = ["status_body", "status_events"]


def status_body(answer: StatusAnswer) -> dict[str, Any]:
    """The JSON body of ``GET /queue/status`` (the seed's four fields, then extras)."""
    body: dict[str, Any] = {
        "warning_msg": answer.warning_msg,
        "jwt_token": answer.jwt_token,
        "position": answer.position,
        "ready": answer.ready,
    }
    if answer.eta is not None:
        body.update(answer.eta.as_dict())
    return body


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def status_events(
    service: WaitingRoomService,
    tenant: str,
    token: str,
    *,
    disconnected: Callable[[], Awaitable[bool]],
    interval: float,
    max_seconds: float = 600.0,
) -> AsyncIterator[bytes]:
    """The event stream of one waiting visitor (the tenant and token were checked already)."""
    yield f"retry: {int(interval * 1000)}\n\n".encode()
    last: dict[str, Any] | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    while loop.time() < deadline:
        try:
            answer = await service.status(tenant, token)
        except GatekeeperError as exc:
            yield _event("error", {"detail": str(exc)})
            return
        body = status_body(answer)
        token = answer.jwt_token or token
        if body != last:
            yield _event("status", body)
            last = body
        else:
            yield b": keep-alive\n\n"
        if answer.ready or answer.warning_msg is not None:
            return
        await asyncio.sleep(interval)
        if await disconnected():
            return
