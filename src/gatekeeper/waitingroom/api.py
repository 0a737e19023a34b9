"""The waiting room's endpoints: the seed's contract, plus tenant keys, events and the page.

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

``business_id`` is the tenant's public id or one of its secret keys; where a secret key is
needed, the endpoint's guard (``guards.py``) says so: 403 naming the key needed, unless the
admin token comes with the public id. Status and ETA answers add ``eta_seconds``,
``eta_range_seconds`` and ``poll_after_seconds``. Errors are problem documents: 400 (missing
header, body not JSON), 401 (unknown tenant or key, bad token), 403 (public id where the secret
key is needed), 422 (a parameter or setting out of bounds or not an integer, each named), 429
with ``Retry-After`` (per-IP limits), 503 with ``Retry-After`` (store or database down).

The endpoints only read the request and call the functions of ``replies.py``. Enqueue and
status, the hot ones, have no guard: the service resolves the tenant from its in-process cache.
"""

from __future__ import annotations

from importlib import resources

from pydantic import BaseModel

from gatekeeper.endpoints import (
    Answer,
    Call,
    Endpoint,
    Reply,
    Routes,
    StreamReply,
    header,
    problem,
    query,
)
from gatekeeper.errors import GatekeeperError
from gatekeeper.waitingroom.config import TenantConfig
from gatekeeper.waitingroom.guards import tenant_key
from gatekeeper.waitingroom.replies import (
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

__all__ = ["waitingroom_endpoints"]


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


_STATIC = resources.files("gatekeeper.waitingroom") / "static"

_PUBLIC = "the tenant's public id (what browsers send) or one of its secret keys"
_SECRET = "a secret key of the tenant; or its public id, with the admin token"
_TENANT = header("business_id", str, max_length=256, description=_PUBLIC)
_TENANT_KEY = header("business_id", str, required=True, max_length=256, description=_SECRET)
_JWT = header("jwt", str, max_length=2048, description="the queue token")
_UNKNOWN = {401: problem("Unknown tenant or key, or a bad or expired token.")}
_LIMITED = {
    429: problem("The address asked too often (per-IP limit).", **{"Retry-After": "Seconds."})
}
_DOWN = {
    503: problem(
        "The waiting room's store or configuration database is unavailable.",
        **{"Retry-After": "Seconds."},
    )
}
_DEGRADED = {"Gatekeeper-Waiting-Room": "`degraded`: decided from the ready token alone."}


def waitingroom_endpoints(service: WaitingRoomService) -> list[Endpoint]:
    """The endpoints of the waiting room, bound to one service. The caller's address is the
    one the gateway resolved (trusted proxies applied)."""
    routes = Routes(tags=("waiting room",), responses=_DOWN)
    backend = tenant_key(service.access)

    @routes.post(
        "/queue/enqueue",
        params=(_TENANT, header("user_id", str, max_length=256, description="the visitor")),
        responses={
            200: Answer("The place in line.", EnqueueResponse),
            400: problem("The user_id header is missing."),
            **_UNKNOWN,
            **_LIMITED,
        },
    )
    async def enqueue(call: Call) -> Reply:
        """Take a place in line (or get back the place already held, with an empty ``jwt``)."""
        params = call.params
        return await enqueue_reply(
            service, params["business_id"] or "", params["user_id"], call.client_ip
        )

    @routes.get(
        "/queue/status",
        params=(_TENANT, _JWT),
        responses={
            200: Answer("Position and readiness.", StatusResponse),
            **_UNKNOWN,
            **_LIMITED,
        },
    )
    async def status(call: Call) -> Reply:
        """Position and readiness; renews an expired (authentic) token: use ``jwt_token`` next.
        Once ready, ``jwt_token`` is a *ready token*: keep it (it still admits while the
        store is down)."""
        params = call.params
        return await status_reply(
            service, params["business_id"] or "", params["jwt"], call.client_ip
        )

    @routes.get(
        "/queue/verify",
        guard=backend,
        params=(_TENANT_KEY, _JWT),
        responses={
            200: Answer("Whether the holder is admitted.", VerifyResponse, headers=_DEGRADED),
            **_UNKNOWN,
        },
    )
    async def verify(call: Call) -> Reply:
        """For the backend: is this token's holder admitted right now? While the store is
        unreachable a valid ready token answers ready with ``degraded: true`` (and the header
        ``Gatekeeper-Waiting-Room: degraded``); any other token gets 503."""
        return await verify_reply(service, call.principal, call.params["jwt"])

    @routes.delete(
        "/queue/finish",
        guard=backend,
        params=(_TENANT_KEY, _JWT),
        responses={200: Answer("The session's state.", FinishResponse), **_UNKNOWN},
    )
    async def finish(call: Call) -> Reply:
        """For the backend: end the ready session; the token never verifies again."""
        return await finish_reply(service, call.principal, call.params["jwt"])

    @routes.get(
        "/config",
        guard=backend,
        params=(_TENANT_KEY,),
        responses={200: Answer("The tenant's settings.", ConfigResponse), **_UNKNOWN},
    )
    async def get_config(call: Call) -> Reply:
        """The tenant's waiting-room settings."""
        return await config_reply(service, call.principal)

    @routes.post(
        "/config",
        guard=backend,
        params=(_TENANT_KEY,),
        body=TenantConfig,
        responses={200: Answer("The updated settings.", ConfigResponse), **_UNKNOWN},
    )
    async def post_config(call: Call) -> Reply:
        """Update some or all settings (strict: each a JSON integer within its bounds; 422
        naming every field at fault)."""
        changes = call.data.model_dump(exclude_unset=True)
        return await update_config_reply(service, call.principal, changes)

    @routes.get(
        "/queue/events",
        params=(
            query("business_id", str, max_length=256, description=f"{_PUBLIC} (or the header)"),
            query("jwt", str, max_length=2048, description="the queue token (or the header)"),
        ),
        responses={
            200: Answer("`status` events until ready.", None, "text/event-stream"),
            **_UNKNOWN,
            **_LIMITED,
        },
    )
    async def events(call: Call) -> Reply | StreamReply:
        """Server-Sent Events of ``/queue/status`` (query ``business_id`` and ``jwt``:
        ``EventSource`` cannot send headers)."""
        value = call.params["business_id"] or call.header_text("business_id")
        token = call.params["jwt"] or call.header_text("jwt") or ""
        try:
            tenant, _ = await service.access.tenant(value)
            await service.status(tenant, token, call.client_ip)
        except GatekeeperError as exc:
            return error_reply(exc)

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
    def waiting_page(call: Call) -> Reply:
        """The hosted, accessible waiting page."""
        html = (_STATIC / "waiting.html").read_bytes()
        headers = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
        return Reply(200, headers, html)

    @routes.get(
        "/queue/client.js",
        include_in_schema=False,
        responses={200: Answer("The script.", None, "text/javascript")},
    )
    def client_js(call: Call) -> Reply:
        """The dependency-free browser client."""
        headers = [
            (b"content-type", b"text/javascript; charset=utf-8"),
            (b"cache-control", b"max-age=300"),
        ]
        return Reply(200, headers, (_STATIC / "client.js").read_bytes())

    @routes.get(
        "/queue/.well-known/jwks.json",
        responses={200: Answer("The public keys (empty for HS256).", {"type": "object"})},
    )
    def jwks(call: Call) -> Reply:
        """Public keys verifying queue tokens (empty for HS256: the secret is never shown)."""
        return json_reply(service.codec.signer.jwks())

    return routes.endpoints
