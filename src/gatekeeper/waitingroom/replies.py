"""The waiting room's answers, as the endpoint table's :class:`~gatekeeper.endpoints.Reply`.

Each endpoint's logic is one function here; the endpoints of ``api.py`` only read the request
(and the tenant their guard resolved) and call it. Who may call is decided before: the public
id or a secret key names the tenant of enqueue and status (the service resolves it from its
in-process cache), and the secret-key guard (``guards.py``) hands verify, finish and the config
the tenant it resolved.

Errors are problem documents (``gatekeeper.problem``), with what the waiting room adds: a store
or configuration database that is down says so (``detail``) and when to retry (the store's
breaker knows: ``Retry-After`` and ``retry_after``); verify and finish keep their own members
(``message``, and ``ready: false`` on verify).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from gatekeeper.endpoints import JSON, Reply, validation_problems
from gatekeeper.errors import GatekeeperError, InvalidInput, PersistenceError, StorageError
from gatekeeper.problem import PROBLEM_JSON, problem_body, problem_of
from gatekeeper.waitingroom.gate import DEGRADED_HEADER
from gatekeeper.waitingroom.service import (
    EnqueueAnswer,
    Eta,
    StatusAnswer,
    WaitingRoomService,
)
from gatekeeper.waitingroom.sse import status_body

__all__ = [
    "config_reply",
    "enqueue_reply",
    "error_reply",
    "finish_reply",
    "json_reply",
    "status_reply",
    "update_config_reply",
    "verify_reply",
]

_ENCODER = json.JSONEncoder(separators=(",", ":"))


def json_reply(
    body: Any, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> Reply:
    """``body`` as compact JSON (ASCII, as ``json.dumps`` writes it)."""
    return Reply(
        status, [(b"content-type", JSON), *(headers or ())], _ENCODER.encode(body).encode()
    )


def _ok(text: str) -> Reply:
    return Reply(200, [(b"content-type", JSON)], text.encode())


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
        return _ok(
            f'{{"jwt":"{answer.jwt}","position":{position},"message":"{answer.message}"'
            f"{ready}{tail}"
        )
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
        return _ok(
            f'{{"warning_msg":{warning_json},'
            f'"jwt_token":"{answer.jwt_token}","position":{position},'
            f'"ready":{"true" if answer.ready else "false"}{tail}'
        )
    return json_reply(status_body(answer))


def error_reply(exc: GatekeeperError, members: Mapping[str, Any] | None = None) -> Reply:
    """The problem answer for an error of the service (never a 500 for bad input; a 503 with
    ``Retry-After`` when a back end is down); ``members`` are added to the document."""
    problem = problem_of(exc)
    detail = problem.detail
    if isinstance(exc, StorageError | PersistenceError):
        what = "store" if isinstance(exc, StorageError) else "configuration database"
        detail = f"waiting room {what} unavailable"
    extra = {**(problem.extra or {}), **(members or {})}
    headers = [(b"content-type", PROBLEM_JSON), *problem.headers]
    return Reply(
        problem.status, headers, problem_body(problem.status, problem.error, detail, **extra)
    )


async def enqueue_reply(
    service: WaitingRoomService, business_id: str, user_id: str | None, ip: str | None
) -> Reply:
    """``POST /queue/enqueue``: the public id (or a secret key) names the tenant."""
    try:
        answer = await service.enqueue(business_id, user_id, ip)
    except GatekeeperError as exc:
        return error_reply(exc)
    return _enqueue_ok(answer)


async def status_reply(
    service: WaitingRoomService, business_id: str, token: str | None, ip: str | None
) -> Reply:
    """``GET /queue/status``: the public id (or a secret key) names the tenant."""
    try:
        answer = await service.status(business_id, token, ip)
    except GatekeeperError as exc:
        return error_reply(exc)
    return _status_ok(answer)


_NOT_READY = {"message": "Invalid token", "ready": False}
_DEGRADED = [(DEGRADED_HEADER[0].lower().encode(), DEGRADED_HEADER[1].encode())]


async def verify_reply(service: WaitingRoomService, tenant: str, token: str | None) -> Reply:
    """``GET /queue/verify`` for ``tenant`` (its secret key was checked). While the store is
    down, a valid ready token is still ready, said by ``degraded`` and a header."""
    try:
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


async def finish_reply(service: WaitingRoomService, tenant: str, token: str | None) -> Reply:
    """``DELETE /queue/finish`` for ``tenant`` (its secret key was checked)."""
    try:
        cleared = await service.finish(tenant, token)
    except GatekeeperError as exc:
        return error_reply(exc, {"message": "Invalid token"})
    if cleared:
        return json_reply({"status": "ready_cleared", "message": "User removed from ready state"})
    return json_reply({"status": "not_ready", "message": "User was not in the ready state"})


async def config_reply(service: WaitingRoomService, tenant: str) -> Reply:
    """``GET /config`` for ``tenant`` (its secret key was checked)."""
    try:
        config = await service.tenant_config(tenant)
    except GatekeeperError as exc:
        return error_reply(exc)
    return json_reply(
        {"message": "Configuration retrieved successfully", "updated_config": config.model_dump()}
    )


async def update_config_reply(
    service: WaitingRoomService, tenant: str, changes: dict[str, Any]
) -> Reply:
    """``POST /config`` for ``tenant`` (its secret key was checked): a partial update of the
    settings (each one checked already: a strict JSON integer within its bounds), applied and
    re-checked as a whole."""
    try:
        config = await service.update_config(tenant, changes)
    except ValidationError as exc:
        problems = validation_problems(exc)
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        return error_reply(InvalidInput(f"invalid configuration: {summary}", problems))
    except GatekeeperError as exc:
        return error_reply(exc)
    return json_reply(
        {"message": "Configuration updated successfully", "updated_config": config.model_dump()}
    )
