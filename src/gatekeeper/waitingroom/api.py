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
Errors are JSON: 400 (missing header), 401 (unknown tenant, bad token), 422 (config out of
bounds, naming the field), 429 with ``Retry-After`` (per-IP limits), 503 (store down).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from gatekeeper.errors import (
    AuthenticationError,
    GatekeeperError,
    RateLimitExceeded,
    StorageError,
    TokenError,
)
from gatekeeper.waitingroom.config import TenantConfig
from gatekeeper.waitingroom.service import (
    EnqueueAnswer,
    Eta,
    InvalidRequest,
    StatusAnswer,
    WaitingRoomService,
)
from gatekeeper.waitingroom.sse import status_body, status_events

__all__ = ["Reply", "build_router", "enqueue_reply", "status_reply", "verify_reply"]

IpOf = Callable[[Request], str | None]


Reply = tuple[int, bytes, dict[str, str] | None]
"""An answer before it becomes a response: status, JSON body, extra headers. The FastAPI routes
and the gateway's native handlers (``native.py``) build the same replies, so they answer alike."""


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


def _response(reply: Reply) -> Response:
    status, body, headers = reply
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return _response(_reply(body, status, headers))


def _error_reply(exc: Exception, extra: dict[str, Any] | None = None) -> Reply:
    """The JSON answer for an error raised by the service (never a 500 for bad input)."""
    body: dict[str, Any] = {"detail": str(exc), **(extra or {})}
    if isinstance(exc, RateLimitExceeded):
        retry = exc.decision.retry_after
        return _reply({**body, "retry_after": retry}, 429, {"Retry-After": str(retry)})
    if isinstance(exc, AuthenticationError | TokenError):
        return _reply(body, 401)
    if isinstance(exc, InvalidRequest):
        return _reply(body, 400)
    if isinstance(exc, StorageError):
        return _reply(
            {**body, "detail": "waiting room store unavailable"}, 503, {"Retry-After": "1"}
        )
    return _reply(body, 500)


def _error(exc: Exception, extra: dict[str, Any] | None = None) -> Response:
    return _response(_error_reply(exc, extra))


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


def _headers(*names: str) -> dict[str, Any]:
    """OpenAPI header parameters. The hot routes read ``request.headers`` themselves: FastAPI's
    per-request parameter solving would cost more than the rest of an enqueue."""
    required = {"business_id", "user_id"}
    return {
        "parameters": [
            {"name": n, "in": "header", "required": n in required, "schema": {"type": "string"}}
            for n in names
        ]
    }


def _socket_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


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


def build_router(service: WaitingRoomService, *, client_ip: IpOf | None = None) -> APIRouter:
    """The routes of the waiting room, bound to one service. ``client_ip`` resolves the
    caller's address (the gateway passes its trusted-proxy aware resolver)."""
    ip_of = client_ip or _socket_ip
    router = APIRouter(tags=["waiting room"])
    biz = Header(None, alias="business_id", convert_underscores=False)

    @router.post(
        "/queue/enqueue",
        responses={200: {"model": EnqueueResponse}},
        openapi_extra=_headers("business_id", "user_id"),
    )
    async def enqueue(request: Request) -> Response:
        """Take a place in line (or get back the place already held, with an empty ``jwt``)."""
        headers = request.headers
        return _response(
            await enqueue_reply(
                service, headers.get("business_id", ""), headers.get("user_id"), ip_of(request)
            )
        )

    @router.get(
        "/queue/status",
        responses={200: {"model": StatusResponse}},
        openapi_extra=_headers("business_id", "jwt"),
    )
    async def status(request: Request) -> Response:
        """Position and readiness; renews an expired (authentic) token: use ``jwt_token`` next."""
        headers = request.headers
        return _response(
            await status_reply(
                service, headers.get("business_id", ""), headers.get("jwt"), ip_of(request)
            )
        )

    @router.get(
        "/queue/verify",
        responses={200: {"model": VerifyResponse}},
        openapi_extra=_headers("business_id", "jwt"),
    )
    async def verify(request: Request) -> Response:
        """For the backend: is this token's holder admitted right now?"""
        headers = request.headers
        return _response(
            await verify_reply(service, headers.get("business_id", ""), headers.get("jwt"))
        )

    @router.delete(
        "/queue/finish",
        responses={200: {"model": FinishResponse}},
        openapi_extra=_headers("business_id", "jwt"),
    )
    async def finish(request: Request) -> Response:
        """For the backend: end the ready session; the token never verifies again."""
        headers = request.headers
        try:
            cleared = await service.finish(headers.get("business_id", ""), headers.get("jwt"))
        except GatekeeperError as exc:
            return _error(exc, {"status": "not_ready", "message": "Invalid token"})
        if cleared:
            return _json({"status": "ready_cleared", "message": "User removed from ready state"})
        return _json({"status": "not_ready", "message": "User was not in the ready state"})

    @router.get("/config", responses={200: {"model": ConfigResponse}})
    async def get_config(business_id: str | None = biz) -> Response:
        """The tenant's waiting-room settings."""
        try:
            config = await service.tenant_config(business_id)
        except GatekeeperError as exc:
            return _error(exc)
        return _json(
            {
                "message": "Configuration retrieved successfully",
                "updated_config": config.model_dump(),
            }
        )

    @router.post(
        "/config",
        responses={200: {"model": ConfigResponse}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": TenantConfig.model_json_schema()}},
            }
        },
    )
    async def post_config(request: Request, business_id: str | None = biz) -> Response:
        """Update some or all settings; out-of-bounds values get 422 naming the field."""
        try:
            await service.tenant_config(business_id)
        except GatekeeperError as exc:
            return _error(exc)
        try:
            changes = json.loads(await request.body() or b"{}")
        except ValueError:
            return _json({"detail": "body must be a JSON object"}, 400)
        if not isinstance(changes, dict):
            return _json({"detail": "body must be a JSON object"}, 400)
        try:
            config = await service.update_config(business_id or "", changes)
        except ValidationError as exc:
            problems = [
                {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
                for err in exc.errors()
            ]
            summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            return _json({"detail": f"invalid configuration: {summary}", "errors": problems}, 422)
        except GatekeeperError as exc:
            return _error(exc)
        return _json(
            {"message": "Configuration updated successfully", "updated_config": config.model_dump()}
        )

    @router.get("/queue/events")
    async def events(request: Request) -> Response:
        """Server-Sent Events of ``/queue/status`` (query ``business_id`` and ``jwt``)."""
        tenant = request.query_params.get("business_id") or request.headers.get("business_id")
        token = request.query_params.get("jwt") or request.headers.get("jwt") or ""
        try:
            await service.status(tenant or "", token, ip_of(request))
        except GatekeeperError as exc:
            return _error(exc)
        stream = status_events(
            service,
            tenant or "",
            token,
            disconnected=request.is_disconnected,
            interval=service.settings.sse_interval_seconds,
        )
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get("/queue/wait", include_in_schema=False)
    async def waiting_page() -> Response:
        """The hosted, accessible waiting page."""
        html = (_STATIC / "waiting.html").read_text()
        return Response(
            html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"}
        )

    @router.get("/queue/client.js", include_in_schema=False)
    async def client_js() -> Response:
        """The dependency-free browser client."""
        return Response(
            (_STATIC / "client.js").read_text(),
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "max-age=300"},
        )

    @router.get("/queue/.well-known/jwks.json")
    async def jwks() -> Response:
        """Public keys verifying queue tokens (empty for HS256: the secret is never shown)."""
        return _json(service.codec.signer.jwks())

    return router
