"""The waiting room's HTTP API: the seed's contract, plus tenant keys, events and the page.

=======================  ==================================================================
``POST /queue/enqueue``  headers ``business_id``, ``user_id`` -> ``{jwt, position, message}``
``GET /queue/status``    headers ``business_id``, ``jwt`` -> ``{warning_msg, jwt_token,
                         position, ready}``
``GET /queue/verify``    headers ``business_id`` (secret key), ``jwt`` -> ``{message, ready}``
``DELETE /queue/finish`` headers ``business_id`` (secret key), ``jwt`` -> ``{status, message}``
``GET|POST /config``     header ``business_id`` (secret key) -> ``{message, updated_config}``
``GET /queue/events``    Server-Sent Events of the status (``sse.py``)
``GET /queue/wait``      the hosted waiting page; ``/queue/client.js`` its script
``GET /queue/.well-known/jwks.json``  public keys when tokens are EdDSA-signed
=======================  ==================================================================

``business_id`` is the tenant's public id or one of its secret keys (``access.py``); where a
secret key is needed, the public id with ``Authorization: Bearer <admin token>`` works too.
Status and ETA answers add ``eta_seconds``, ``eta_range_seconds`` and ``poll_after_seconds``.
Errors are JSON: 400 (missing header), 401 (unknown tenant or key, bad token), 403 (public id
where the secret key is needed), 422 (config out of bounds or not an integer, naming the field),
429 with ``Retry-After`` (per-IP limits), 503 with ``Retry-After`` (store down).

The routes only read the request and call the reply functions of ``replies.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from gatekeeper.errors import GatekeeperError
from gatekeeper.waitingroom.config import TenantConfig
from gatekeeper.waitingroom.replies import (
    Reply,
    config_reply,
    enqueue_reply,
    error_reply,
    finish_reply,
    json_reply,
    status_reply,
    update_config_reply,
    verify_reply,
)
from gatekeeper.waitingroom.service import WaitingRoomService
from gatekeeper.waitingroom.sse import status_events

__all__ = ["build_router"]

IpOf = Callable[[Request], str | None]


def _response(reply: Reply) -> Response:
    status, body, headers = reply
    return Response(body, status_code=status, media_type="application/json", headers=headers)


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
    degraded: bool = False


class FinishResponse(BaseModel):
    status: str
    message: str


class ConfigResponse(BaseModel):
    message: str
    updated_config: TenantConfig


class ErrorResponse(BaseModel):
    detail: str


class KeyNeeded(BaseModel):
    detail: str
    needed: str


class Unavailable(BaseModel):
    detail: str
    retry_after: int


_PUBLIC = "the tenant's public id or one of its secret keys"
_SECRET = (
    "one of the tenant's secret keys; or its public id with `Authorization: Bearer <admin token>`"
)
_ERRORS: dict[int, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "a required header is missing, or the body"},
    401: {"model": ErrorResponse, "description": "unknown tenant or key, bad token"},
    403: {"model": KeyNeeded, "description": "the public id where a secret key is needed"},
    422: {"model": ErrorResponse, "description": "a setting out of bounds, unknown or no integer"},
    429: {"model": ErrorResponse, "description": "per-IP limit (see Retry-After)"},
    503: {"model": Unavailable, "description": "store down (see Retry-After)"},
}


def _responses(ok: dict[str, Any], *codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI answers: 200 as ``ok``, then the listed error statuses."""
    return {200: ok, **{code: _ERRORS[code] for code in codes}}


def _headers(**described: str) -> dict[str, Any]:
    """OpenAPI header parameters. The routes read ``request.headers`` themselves: FastAPI's
    per-request parameter solving would cost more than the rest of an enqueue."""
    required = {"business_id", "user_id"}
    return {
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": name in required,
                "description": text,
                "schema": {"type": "string"},
            }
            for name, text in described.items()
        ]
    }


def _socket_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


_STATIC = resources.files("gatekeeper.waitingroom") / "static"
_AUTH = {"Authorization": "`Bearer <admin token>`: instead of a secret key"}


def build_router(service: WaitingRoomService, *, client_ip: IpOf | None = None) -> APIRouter:
    """The routes of the waiting room, bound to one service. ``client_ip`` resolves the
    caller's address (the gateway passes its trusted-proxy aware resolver)."""
    ip_of = client_ip or _socket_ip
    router = APIRouter(tags=["waiting room"])

    @router.post(
        "/queue/enqueue",
        responses=_responses({"model": EnqueueResponse}, 400, 401, 429, 503),
        openapi_extra=_headers(business_id=_PUBLIC, user_id="the visitor's id"),
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
        responses=_responses({"model": StatusResponse}, 401, 429, 503),
        openapi_extra=_headers(business_id=_PUBLIC, jwt="the queue token"),
    )
    async def status(request: Request) -> Response:
        """Position and readiness; renews an expired (authentic) token: use ``jwt_token`` next.
        Once ready, ``jwt_token`` is a *ready token*: keep it (it still admits while the
        store is down)."""
        headers = request.headers
        return _response(
            await status_reply(
                service, headers.get("business_id", ""), headers.get("jwt"), ip_of(request)
            )
        )

    @router.get(
        "/queue/verify",
        responses=_responses({"model": VerifyResponse}, 401, 403, 503),
        openapi_extra=_headers(business_id=_SECRET, jwt="the visitor's token", **_AUTH),
    )
    async def verify(request: Request) -> Response:
        """For the backend: is this token's holder admitted right now? While the store is
        unreachable a valid ready token answers ready with ``degraded: true`` (and the header
        ``Gatekeeper-Waiting-Room: degraded``); any other token gets 503."""
        headers = request.headers
        return _response(
            await verify_reply(
                service,
                headers.get("business_id", ""),
                headers.get("jwt"),
                headers.get("authorization"),
            )
        )

    @router.delete(
        "/queue/finish",
        responses=_responses({"model": FinishResponse}, 401, 403, 503),
        openapi_extra=_headers(business_id=_SECRET, jwt="the visitor's token", **_AUTH),
    )
    async def finish(request: Request) -> Response:
        """For the backend: end the ready session; the token never verifies again."""
        headers = request.headers
        return _response(
            await finish_reply(
                service,
                headers.get("business_id", ""),
                headers.get("jwt"),
                headers.get("authorization"),
            )
        )

    @router.get(
        "/config",
        responses=_responses({"model": ConfigResponse}, 401, 403, 503),
        openapi_extra=_headers(business_id=_SECRET, **_AUTH),
    )
    async def get_config(request: Request) -> Response:
        """The tenant's waiting-room settings."""
        headers = request.headers
        return _response(
            await config_reply(service, headers.get("business_id"), headers.get("authorization"))
        )

    @router.post(
        "/config",
        responses=_responses({"model": ConfigResponse}, 400, 401, 403, 422, 503),
        openapi_extra={
            **_headers(business_id=_SECRET, **_AUTH),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": TenantConfig.model_json_schema()}},
            },
        },
    )
    async def post_config(request: Request) -> Response:
        """Update some or all settings; out-of-bounds values get 422 naming the field."""
        headers = request.headers
        return _response(
            await update_config_reply(
                service,
                headers.get("business_id"),
                headers.get("authorization"),
                await request.body(),
            )
        )

    @router.get(
        "/queue/events",
        responses=_responses(
            {"content": {"text/event-stream": {}}, "description": "status events"},
            401,
            429,
            503,
        ),
        openapi_extra={
            "parameters": [
                {
                    "name": name,
                    "in": "query",
                    "required": True,
                    "description": text,
                    "schema": {"type": "string"},
                }
                for name, text in (("business_id", _PUBLIC), ("jwt", "the queue token"))
            ]
        },
    )
    async def events(request: Request) -> Response:
        """Server-Sent Events of ``/queue/status`` (query ``business_id`` and ``jwt``)."""
        value = request.query_params.get("business_id") or request.headers.get("business_id")
        token = request.query_params.get("jwt") or request.headers.get("jwt") or ""
        try:
            tenant, _ = await service.access.tenant(value)
            await service.status(tenant, token, ip_of(request))
        except GatekeeperError as exc:
            return _response(error_reply(exc))
        stream = status_events(
            service,
            tenant,
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
        return _response(json_reply(service.codec.signer.jwks()))

    return router
