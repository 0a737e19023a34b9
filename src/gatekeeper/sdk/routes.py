"""The decision service for browsers and backends (seed 002): ``/sdk.js``, ``/sdk``,
``POST /sdk/check`` and ``POST /sdk/track``.

``/sdk/check`` decides a call without forwarding anything: the same :class:`Guard` the gateway
uses (deny lists, bans, key, tier limits), so a client that asks first gets the answer the
gateway would give. A check debits the quota like a real call; ``/sdk/track`` only records that
a call happened (for the request log) and debits nothing.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import Field

from gatekeeper.errors import AuthenticationError
from gatekeeper.identity.guard import Guard, Verdict
from gatekeeper.identity.http import (
    ErrorRoute,
    StrictBody,
    client_address,
    presented_credentials,
)
from gatekeeper.limits.headers import rate_limit_headers

__all__ = ["sdk_router"]

# The page's scripts are files of this origin; its small stylesheet is inline.
_PAGE_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; object-src 'none'"


class CheckBody(StrictBody):
    api_key: str | None = Field(default=None, max_length=200)
    cost: int = Field(default=1, ge=1, le=1000)
    endpoint: str = Field(default="", max_length=2048)


class TrackBody(StrictBody):
    api_key: str | None = Field(default=None, max_length=200)
    endpoint: str = Field(default="", max_length=2048)
    method: str = Field(default="GET", max_length=16)
    status: int = Field(default=200, ge=100, le=599)
    latency_ms: float | None = Field(default=None, ge=0, le=3_600_000)


def _static(name: str) -> str:
    return resources.files("gatekeeper.sdk").joinpath("static", name).read_text("utf-8")


def _verdict_response(verdict: Verdict, **extra: Any) -> JSONResponse:
    decision = verdict.decision
    body: dict[str, Any] = {
        **extra,
        "allowed": verdict.allowed,
        "reason": verdict.reason,
        "message": verdict.message,
        "retry_after": verdict.retry_after,
    }
    headers: dict[str, str] = {"cache-control": "no-store"}
    if verdict.principal is not None:
        body["tier"] = verdict.principal.tier
    if decision is not None:
        body.update(
            {
                "policy": decision.policy,
                "limit": decision.limit,
                "remaining": max(0, decision.remaining),
                "reset_after": decision.reset_after,
            }
        )
        policies = {p.name: p for p in verdict.policies}
        for name, value in rate_limit_headers(decision, policies=policies, legacy=True):
            headers[name.decode()] = value.decode()
    if not verdict.allowed:
        body["error"] = verdict.reason
        if verdict.retry_after:
            # Bans outlast the limit's own Retry-After: the longer wait is the true one.
            headers["retry-after"] = str(verdict.retry_after)
    return JSONResponse(body, status_code=verdict.status, headers=headers)


def sdk_router(guard: Guard) -> APIRouter:
    """SDK routes deciding through ``guard``."""
    router = APIRouter(route_class=ErrorRoute, tags=["sdk"])
    identity = guard.identity
    script = _static("sdk.js")
    page = _static("demo.html")
    demo_script = _static("demo.js")

    @router.get("/sdk.js", include_in_schema=False)
    async def sdk_js() -> Response:
        """The dependency-free browser SDK."""
        return Response(
            script,
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=300"},
        )

    @router.get("/sdk", include_in_schema=False)
    async def sdk_page() -> HTMLResponse:
        """A page that demonstrates the SDK against this server."""
        return HTMLResponse(page, headers={"Content-Security-Policy": _PAGE_CSP})

    @router.get("/sdk/demo.js", include_in_schema=False)
    async def demo_js() -> Response:
        return Response(demo_script, media_type="application/javascript")

    @router.post("/sdk/check")
    async def check(request: Request, body: CheckBody | None = None) -> JSONResponse:
        """Decide one call (debiting ``cost``) without forwarding it. The body is optional:
        the key may come in a header, and the cost defaults to 1."""
        body = body or CheckBody()
        bearer, header_key = presented_credentials(request)
        ip = client_address(request)
        verdict = await guard.check(
            ip, bearer=bearer, api_key=body.api_key or header_key, cost=body.cost
        )
        await identity.request_log.append(
            kind="check",
            ip=ip,
            endpoint=body.endpoint,
            subject=verdict.subject,
            allowed=verdict.allowed,
            status=verdict.status,
        )
        return _verdict_response(verdict)

    @router.get("/data")
    async def data(request: Request) -> JSONResponse:
        """The seeds' protected sample endpoint: needs a key (or token); limited by its tier."""
        bearer, api_key = presented_credentials(request)
        if bearer is None and api_key is None:
            raise AuthenticationError("pass an API key (X-API-Key, api_key=, or Bearer)")
        ip = client_address(request)
        verdict = await guard.check(ip, bearer=bearer, api_key=api_key)
        await identity.request_log.append(
            kind="data", ip=ip, subject=verdict.subject, allowed=verdict.allowed,
            status=verdict.status,
        )  # fmt: skip
        if not verdict.allowed:
            return _verdict_response(verdict)
        return _verdict_response(verdict, data={"message": "protected sample data"})

    @router.post("/sdk/track")
    async def track(request: Request, body: TrackBody | None = None) -> dict[str, Any]:
        """Record a call the client made (request log only; debits nothing)."""
        body = body or TrackBody()
        bearer, header_key = presented_credentials(request)
        principal = await identity.authenticate(bearer, body.api_key or header_key)
        await identity.request_log.append(
            kind="track",
            ip=client_address(request),
            subject=principal.subject,
            endpoint=body.endpoint,
            method=body.method,
            status=body.status,
            latency_ms=body.latency_ms,
        )
        return {"tracked": True}

    return router
