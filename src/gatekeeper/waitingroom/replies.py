"""The waiting room's answers, before they become HTTP responses.

Each endpoint's logic is one function here returning a :data:`Reply` (status, JSON body, extra
headers). The FastAPI routes (``api.py``) and the gateway's native handlers (``native.py``)
call the same functions, so both paths answer alike, and moving an endpoint to another table
of routes is a matter of calling its function.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import ValidationError

from gatekeeper.errors import (
    AuthenticationError,
    GatekeeperError,
    PermissionDenied,
    PersistenceError,
    RateLimitExceeded,
    StorageError,
    TokenError,
)
from gatekeeper.waitingroom.deadline import StoreUnavailable
from gatekeeper.waitingroom.gate import DEGRADED_HEADER
from gatekeeper.waitingroom.service import (
    EnqueueAnswer,
    Eta,
    InvalidRequest,
    StatusAnswer,
    WaitingRoomService,
)
from gatekeeper.waitingroom.sse import status_body

__all__ = [
    "Reply",
    "config_reply",
    "enqueue_reply",
    "error_reply",
    "finish_reply",
    "json_reply",
    "status_reply",
    "update_config_reply",
    "verify_reply",
]

Reply = tuple[int, bytes, dict[str, str] | None]
"""An answer before it becomes a response: status, JSON body, extra headers."""

_ENCODER = json.JSONEncoder(separators=(",", ":"))


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status, _ENCODER.encode(body).encode(), headers


# The two hot answers (enqueue, status poll) are formatted by hand when every string in them is
# plain and every number has its usual type: the same bytes as ``json_reply`` would give (tests
# compare them), at a fraction of json's per-call cost (an encoder built for each call).
# Anything else takes ``json_reply``.
_PLAIN = re.compile(r"[ !#-\[\]-~]*\Z")  # printable ASCII but the quote and the backslash


def _eta_json(eta: Eta | None) -> str | None:
    """``,"eta_seconds":..,"eta_range_seconds":[..],"poll_after_seconds":..}`` or None."""
    if eta is None:
        return "}"
    seconds, low, high, poll = eta
    if (
        type(seconds) is int
        and type(low) is int
        and type(high) is int
        and type(poll) is float
        and math.isfinite(poll)
    ):
        return (
            f',"eta_seconds":{seconds},"eta_range_seconds":[{low},{high}],'
            f'"poll_after_seconds":{poll!r}}}'
        )
    return None


def _position_json(position: int | None) -> str | None:
    if position is None:
        return "null"
    return str(position) if type(position) is int else None


def _enqueue_body(answer: EnqueueAnswer) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jwt": answer.jwt,
        "position": answer.position,
        "message": answer.message,
    }
    if answer.ready:
        body["ready"] = True
    if answer.eta is not None:
        body.update(answer.eta.as_dict())
    return body


def _enqueue_ok(answer: EnqueueAnswer) -> Reply:
    tail = _eta_json(answer.eta)
    position = _position_json(answer.position)
    if (
        tail is not None
        and position is not None
        and _PLAIN.match(answer.jwt)
        and _PLAIN.match(answer.message)
    ):
        ready = ',"ready":true' if answer.ready else ""
        text = (
            f'{{"jwt":"{answer.jwt}","position":{position},"message":"{answer.message}"'
            f"{ready}{tail}"
        )
        return 200, text.encode(), None
    return json_reply(_enqueue_body(answer))


def _status_ok(answer: StatusAnswer) -> Reply:
    warning = answer.warning_msg
    tail = _eta_json(answer.eta)
    position = _position_json(answer.position)
    if (
        tail is not None
        and position is not None
        and (warning is None or _PLAIN.match(warning))
        and _PLAIN.match(answer.jwt_token)
        and type(answer.ready) is bool
    ):
        warning_json = "null" if warning is None else f'"{warning}"'
        text = (
            f'{{"warning_msg":{warning_json},'
            f'"jwt_token":"{answer.jwt_token}","position":{position},'
            f'"ready":{"true" if answer.ready else "false"}{tail}'
        )
        return 200, text.encode(), None
    return json_reply(status_body(answer))


def error_reply(exc: Exception, extra: dict[str, Any] | None = None) -> Reply:
    """The JSON answer for an error raised by the service (never a 500 for bad input, and a
    503 with ``Retry-After`` when a back end is down)."""
    body: dict[str, Any] = {"detail": str(exc), **(extra or {})}
    if isinstance(exc, RateLimitExceeded):
        retry = exc.decision.retry_after
        return json_reply({**body, "retry_after": retry}, 429, {"Retry-After": str(retry)})
    if isinstance(exc, AuthenticationError | TokenError):
        return json_reply(body, 401)
    if isinstance(exc, PermissionDenied):
        if "message" in body:
            body["message"] = str(exc)
        return json_reply({**body, "needed": "secret_key"}, 403)
    if isinstance(exc, InvalidRequest):
        return json_reply(body, 400)
    if isinstance(exc, StorageError | PersistenceError):
        what = "store" if isinstance(exc, StorageError) else "configuration database"
        retry = exc.retry_after if isinstance(exc, StoreUnavailable) else 1
        return json_reply(
            {**body, "detail": f"waiting room {what} unavailable", "retry_after": retry},
            503,
            {"Retry-After": str(retry)},
        )
    return json_reply(body, 500)


async def enqueue_reply(
    service: WaitingRoomService, business_id: str, user_id: str | None, ip: str | None
) -> Reply:
    """``POST /queue/enqueue``: the public id is enough."""
    try:
        answer = await service.enqueue(business_id, user_id, ip)
    except GatekeeperError as exc:
        return error_reply(exc)
    return _enqueue_ok(answer)


async def status_reply(
    service: WaitingRoomService, business_id: str, token: str | None, ip: str | None
) -> Reply:
    """``GET /queue/status``: the public id is enough."""
    try:
        answer = await service.status(business_id, token, ip)
    except GatekeeperError as exc:
        return error_reply(exc)
    return _status_ok(answer)


_NOT_READY = {"message": "Invalid token", "ready": False}
_DEGRADED = {DEGRADED_HEADER[0]: DEGRADED_HEADER[1]}


async def verify_reply(
    service: WaitingRoomService, business_id: str, token: str | None, authorization: str | None
) -> Reply:
    """``GET /queue/verify``: the secret key (or the admin token) is needed. While the store
    is down, a valid ready token is still ready, said by ``degraded`` and a header."""
    try:
        tenant = await service.access.private(business_id, authorization, "GET /queue/verify")
        verdict = await service.verification(tenant, token)
    except GatekeeperError as exc:
        return error_reply(exc, _NOT_READY)
    ready = verdict.ready
    body: dict[str, Any] = {
        "message": "User is ready" if ready else "User is not ready",
        "ready": ready,
    }
    if verdict.degraded:
        return json_reply({**body, "degraded": True}, 200, _DEGRADED)
    return json_reply(body)


async def finish_reply(
    service: WaitingRoomService, business_id: str, token: str | None, authorization: str | None
) -> Reply:
    """``DELETE /queue/finish``: the secret key (or the admin token) is needed."""
    try:
        tenant = await service.access.private(business_id, authorization, "DELETE /queue/finish")
        cleared = await service.finish(tenant, token)
    except GatekeeperError as exc:
        return error_reply(exc, {"status": "not_ready", "message": "Invalid token"})
    if cleared:
        return json_reply({"status": "ready_cleared", "message": "User removed from ready state"})
    return json_reply({"status": "not_ready", "message": "User was not in the ready state"})


async def config_reply(
    service: WaitingRoomService, business_id: str | None, authorization: str | None
) -> Reply:
    """``GET /config``: the secret key (or the admin token) is needed."""
    try:
        tenant = await service.access.private(business_id, authorization, "GET /config")
        config = await service.tenant_config(tenant)
    except GatekeeperError as exc:
        return error_reply(exc)
    return json_reply(
        {"message": "Configuration retrieved successfully", "updated_config": config.model_dump()}
    )


async def update_config_reply(
    service: WaitingRoomService, business_id: str | None, authorization: str | None, raw: bytes
) -> Reply:
    """``POST /config``: the secret key (or the admin token) is needed; a partial update,
    validated as a whole (strict JSON integers within bounds): 422 naming each bad field."""
    try:
        tenant = await service.access.private(business_id, authorization, "POST /config")
        await service.tenant_config(tenant)
    except GatekeeperError as exc:
        return error_reply(exc)
    try:
        changes = json.loads(raw or b"{}")
    except ValueError:
        return json_reply({"detail": "body must be a JSON object"}, 400)
    if not isinstance(changes, dict):
        return json_reply({"detail": "body must be a JSON object"}, 400)
    try:
        config = await service.update_config(tenant, changes)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return json_reply({"detail": f"invalid configuration: {summary}", "errors": problems}, 422)
    except GatekeeperError as exc:
        return error_reply(exc)
    return json_reply(
        {"message": "Configuration updated successfully", "updated_config": config.model_dump()}
    )
