"""The waiting room's HTTP API: the seed's contract, exactly, plus events and the hosted page.

=======================  ==================================================================
``POST /queue/enqueue``  headers ``business_id``, ``user_id`` -> ``{jwt, position, message}``
``GET /queue/status``    headers ``business_id``, ``jwt`` -> ``{warning_msg, jwt_token,
                         position, ready}``
``GET /queue/verify``    headers ``business_id``, ``jwt`` -> ``{message, ready}``
``DELETE /queue/finish`` headers ``business_id``, ``jwt`` -> ``{status, message}``
``GET|POST /config``     header ``business_id`` -> ``{message, updated_config}``
``GET /queue/events``    Server-Sent Events of the status (``sse.py``)
``GET /queue/wait``      the hosted waiting page; ``/queue/client.js`` its script
``GET /queue/.well-known/jwks.json``  public keys when tokens are EdDSA-signed
=======================  ==================================================================

Status and ETA answers add ``eta_seconds``, ``eta_range_seconds`` and ``poll_after_seconds``.
Errors are problem documents (``gatekeeper.problem``): 400 (missing header, body not JSON),
401 (unknown tenant, bad token), 422 (config out of bounds, naming the field), 429 with
``Retry-After`` (per-IP limits), 503 (store down).

The endpoints are served by the gateway's endpoint table; the hot ones (enqueue, status poll)
are answered from the request's headers with the hand-formatted replies below.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from typing import Any

from pydantic import BaseModel

from gatekeeper.endpoints import (
    Answer,
    Call,
    Endpoint,
    Routes,
    StreamReply,
    header,
    problem,
    query,
)
from gatekeeper.endpoints import Reply as Result
from gatekeeper.errors import BadRequest, GatekeeperError
from gatekeeper.problem import problem_body, problem_of
from gatekeeper.waitingroom.config import TenantConfig
from gatekeeper.waitingroom.service import (
    EnqueueAnswer,
    Eta,
    InvalidRequest,
    StatusAnswer,
    WaitingRoomService,
)
from gatekeeper.waitingroom.sse import status_body, status_events

__all__ = ["Reply", "enqueue_reply", "status_reply", "verify_reply", "waitingroom_endpoints"]


Reply = tuple[int, bytes, dict[str, str] | None]
"""An answer before it becomes a response: status, JSON body, extra headers (a problem
document's carry its content type)."""


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status, _ENCODER.encode(body).encode(), headers


# The two hot answers (enqueue, status poll) are formatted by hand when every string in them is
# plain and every number has its usual type: the same bytes as ``_reply`` would give (tests
# compare them), at a fraction of json's per-call cost (an encoder built for each call).
# Anything else takes ``_reply``.
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
    return _reply(_enqueue_body(answer))


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
    return _reply(status_body(answer))


_JSON = b"application/json"


def _result(reply: Reply) -> Result:
    """A reply as the endpoint table's :class:`~gatekeeper.endpoints.Reply`."""
    status, body, extra = reply
    if not extra:
        return Result(status, [(b"content-type", _JSON)], body)
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    if "content-type" not in extra:
        headers.append((b"content-type", _JSON))
    return Result(status, headers, body)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Result:
    return _result(_reply(body, status, headers))


def _error_reply(exc: Exception, extra: dict[str, Any] | None = None) -> Reply:
    """The problem answer for an error raised by the service (never a 500 for bad input);
    ``extra`` members are added (the seed's ``message`` and ``ready`` on verify)."""
    if isinstance(exc, InvalidRequest):
        exc = BadRequest(str(exc))
    problem = problem_of(exc)
    headers = {"content-type": "application/problem+json"}
    for name, value in problem.headers:
        headers[name.decode("latin-1")] = value.decode("latin-1")
    members = {**(problem.extra or {}), **(extra or {})}
    if problem.error == "storage_unavailable":
        detail = "waiting room store unavailable"
    else:
        detail = problem.detail
    return problem.status, problem_body(problem.status, problem.error, detail, **members), headers


def _error(exc: Exception, extra: dict[str, Any] | None = None) -> Result:
    return _result(_error_reply(exc, extra))


async def enqueue_reply(
    service: WaitingRoomService, tenant: str, user_id: str | None, ip: str | None
) -> Reply:
    """``POST /queue/enqueue``'s answer."""
    try:
        answer = await service.enqueue(tenant, user_id, ip)
    except GatekeeperError as exc:
        return _error_reply(exc)
    return _enqueue_ok(answer)


async def status_reply(
    service: WaitingRoomService, tenant: str, token: str | None, ip: str | None
) -> Reply:
    """``GET /queue/status``'s answer."""
    try:
        answer = await service.status(tenant, token, ip)
    except GatekeeperError as exc:
        return _error_reply(exc)
    return _status_ok(answer)


async def verify_reply(service: WaitingRoomService, tenant: str, token: str | None) -> Reply:
    """``GET /queue/verify``'s answer."""
    try:
        ready = await service.verify(tenant, token)
    except GatekeeperError as exc:
        return _error_reply(exc, {"message": "Invalid token", "ready": False})
    return _reply({"message": "User is ready" if ready else "User is not ready", "ready": ready})


class EnqueueResponse(BaseModel):
    jwt: str
    position: int | None
    message: str


class StatusResponse(BaseModel):
    warning_msg: str | None
    jwt_token: str
    position: int | None
    ready: bool


class VerifyResponse(BaseModel):
    message: str
    ready: bool


class FinishResponse(BaseModel):
    status: str
    message: str


class ConfigResponse(BaseModel):
    message: str
    updated_config: TenantConfig


_STATIC = resources.files("gatekeeper.waitingroom") / "static"


_BUSINESS_ID = header(
    "business_id", str, max_length=256, description="the tenant (required; 401 when unknown)"
)
_JWT = header("jwt", str, max_length=2048, description="the queue token")
_UNKNOWN = {401: problem("Unknown tenant, or a bad or expired token.")}
_LIMITED = {
    429: problem("The address asked too often (per-IP limit).", **{"Retry-After": "Seconds."})
}
_DOWN = {503: problem("The waiting room's store is unavailable.", **{"Retry-After": "Seconds."})}


def waitingroom_endpoints(service: WaitingRoomService) -> list[Endpoint]:
    """The endpoints of the waiting room, bound to one service. The caller's address is the
    one the gateway resolved (trusted proxies applied)."""
    routes = Routes(tags=("waiting room",), responses=_DOWN)

    @routes.post(
        "/queue/enqueue",
        params=(_BUSINESS_ID, header("user_id", str, max_length=256, description="the user")),
        responses={
            200: Answer("The place in line.", EnqueueResponse),
            400: problem("The user_id header is missing."),
            **_UNKNOWN,
            **_LIMITED,
        },
    )
    async def enqueue(call: Call) -> Result:
        """Take a place in line (or get back the place already held, with an empty ``jwt``)."""
        params = call.params
        return _result(
            await enqueue_reply(
                service, params["business_id"] or "", params["user_id"], call.client_ip
            )
        )

    @routes.get(
        "/queue/status",
        params=(_BUSINESS_ID, _JWT),
        responses={
            200: Answer("Position and readiness.", StatusResponse),
            **_UNKNOWN,
            **_LIMITED,
        },
    )
    async def status(call: Call) -> Result:
        """Position and readiness; renews an expired (authentic) token: use ``jwt_token`` next."""
        params = call.params
        return _result(
            await status_reply(service, params["business_id"] or "", params["jwt"], call.client_ip)
        )

    @routes.get(
        "/queue/verify",
        params=(_BUSINESS_ID, _JWT),
        responses={200: Answer("Whether the holder is admitted.", VerifyResponse), **_UNKNOWN},
    )
    async def verify(call: Call) -> Result:
        """For the backend: is this token's holder admitted right now?"""
        params = call.params
        return _result(await verify_reply(service, params["business_id"] or "", params["jwt"]))

    @routes.delete(
        "/queue/finish",
        params=(_BUSINESS_ID, _JWT),
        responses={200: Answer("The session's state.", FinishResponse), **_UNKNOWN},
    )
    async def finish(call: Call) -> Result:
        """For the backend: end the ready session; the token never verifies again."""
        params = call.params
        try:
            cleared = await service.finish(params["business_id"] or "", params["jwt"])
        except GatekeeperError as exc:
            return _error(exc, {"message": "Invalid token"})
        if cleared:
            return _json({"status": "ready_cleared", "message": "User removed from ready state"})
        return _json({"status": "not_ready", "message": "User was not in the ready state"})

    @routes.get(
        "/config",
        params=(_BUSINESS_ID,),
        responses={200: Answer("The tenant's settings.", ConfigResponse), **_UNKNOWN},
    )
    async def get_config(call: Call) -> Result:
        """The tenant's waiting-room settings."""
        try:
            config = await service.tenant_config(call.params["business_id"])
        except GatekeeperError as exc:
            return _error(exc)
        return _json(
            {
                "message": "Configuration retrieved successfully",
                "updated_config": config.model_dump(),
            }
        )

    @routes.post(
        "/config",
        params=(_BUSINESS_ID,),
        body=TenantConfig,
        responses={200: Answer("The updated settings.", ConfigResponse), **_UNKNOWN},
    )
    async def post_config(call: Call) -> Result:
        """Update some or all settings (strict types: ``true`` is not a number); out-of-bounds
        values get 422 naming the field."""
        business_id = call.params["business_id"]
        changes = call.data.model_dump(exclude_unset=True)
        try:
            await service.tenant_config(business_id)
            config = await service.update_config(business_id or "", changes)
        except GatekeeperError as exc:
            return _error(exc)
        return _json(
            {"message": "Configuration updated successfully", "updated_config": config.model_dump()}
        )

    @routes.get(
        "/queue/events",
        params=(
            query("business_id", str, max_length=256, description="the tenant (or the header)"),
            query("jwt", str, max_length=2048, description="the queue token (or the header)"),
        ),
        responses={
            200: Answer("`status` events until ready.", None, "text/event-stream"),
            **_UNKNOWN,
            **_LIMITED,
        },
    )
    async def events(call: Call) -> Result | StreamReply:
        """Server-Sent Events of ``/queue/status`` (query ``business_id`` and ``jwt``)."""
        tenant = call.params["business_id"] or call.header_text("business_id") or ""
        token = call.params["jwt"] or call.header_text("jwt") or ""
        try:
            await service.status(tenant, token, call.client_ip)
        except GatekeeperError as exc:
            return _error(exc)

        async def gone() -> bool:
            return call.is_disconnected()

        stream = status_events(
            service,
            tenant,
            token,
            disconnected=gone,
            interval=service.settings.sse_interval_seconds,
        )
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
        ]
        return StreamReply(200, headers, stream)

    page = Answer("The page.", None, "text/html")

    @routes.get("/queue/wait", include_in_schema=False, responses={200: page})
    def waiting_page(call: Call) -> Result:
        """The hosted, accessible waiting page."""
        html = (_STATIC / "waiting.html").read_bytes()
        headers = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
        return Result(200, headers, html)

    @routes.get(
        "/queue/client.js",
        include_in_schema=False,
        responses={200: Answer("The script.", None, "text/javascript")},
    )
    def client_js(call: Call) -> Result:
        """The dependency-free browser client."""
        headers = [
            (b"content-type", b"text/javascript; charset=utf-8"),
            (b"cache-control", b"max-age=300"),
        ]
        return Result(200, headers, (_STATIC / "client.js").read_bytes())

    @routes.get(
        "/queue/.well-known/jwks.json",
        responses={200: Answer("The public keys (empty for HS256).", {"type": "object"})},
    )
    def jwks(call: Call) -> Result:
        """Public keys verifying queue tokens (empty for HS256: the secret is never shown)."""
        return _json(service.codec.signer.jwks())

    return routes.endpoints
