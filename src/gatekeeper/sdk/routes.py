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

from pydantic import Field

from gatekeeper.endpoints import (
    Answer,
    Call,
    Endpoint,
    Reply,
    Routes,
    bytes_reply,
    json_reply,
    problem,
    problem_reply,
    query,
)
from gatekeeper.errors import AuthenticationError
from gatekeeper.identity import schemas
from gatekeeper.identity.guard import Guard, Verdict
from gatekeeper.identity.http import IdentityGuards, StrictBody, presented_credentials
from gatekeeper.limits.headers import rate_limit_headers

__all__ = ["sdk_endpoints"]

# The page's scripts are files of this origin; its small stylesheet is inline.
_PAGE_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; object-src 'none'"


class CheckBody(StrictBody):
    """What a client asks before a call: the endpoint and method it is about to call (what
    the seeds' browser SDK sends), its key, and the cost."""

    api_key: str | None = Field(default=None, max_length=200)
    cost: int = Field(default=1, ge=1, le=1000)
    endpoint: str = Field(default="", max_length=2048)
    method: str = Field(default="GET", max_length=16, pattern=r"^[A-Za-z]+$")


class TrackBody(StrictBody):
    """A call the client made. ``status_code`` and ``response_time_ms`` are the seeds' browser
    SDK's names for ``status`` and ``latency_ms`` (either spelling is accepted)."""

    api_key: str | None = Field(default=None, max_length=200)
    endpoint: str = Field(default="", max_length=2048)
    method: str = Field(default="GET", max_length=16, pattern=r"^[A-Za-z]+$")
    status: int | None = Field(default=None, ge=100, le=599)
    status_code: int | None = Field(default=None, ge=100, le=599)
    latency_ms: float | None = Field(default=None, ge=0, le=3_600_000)
    response_time_ms: float | None = Field(default=None, ge=0, le=3_600_000)


def _static(name: str) -> bytes:
    return resources.files("gatekeeper.sdk").joinpath("static", name).read_bytes()


def _verdict_reply(verdict: Verdict, **extra: Any) -> Reply:
    """An allowed verdict as JSON; a denial as a problem document carrying the same fields
    (``allowed``, ``reason``, ``message``, ``retry_after``, the limit's state)."""
    decision = verdict.decision
    body: dict[str, Any] = {
        **extra,
        "allowed": verdict.allowed,
        "reason": verdict.reason,
        "message": verdict.message,
        "retry_after": verdict.retry_after,
    }
    headers = [(b"cache-control", b"no-store")]
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
        headers += rate_limit_headers(decision, policies=policies, legacy=True)
    if verdict.allowed:
        return json_reply(body, verdict.status, headers)
    if verdict.retry_after:
        # Bans outlast the limit's own Retry-After: the longer wait is the true one.
        headers = [h for h in headers if h[0] != b"retry-after"]
        headers.append((b"retry-after", str(verdict.retry_after).encode()))
    if verdict.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="gatekeeper"'))
    detail = verdict.message or verdict.reason
    return problem_reply(verdict.status, verdict.reason, detail, headers, **body)


_DENIALS = {
    401: problem("The key or token is wrong, expired or revoked.", **{
        "WWW-Authenticate": "Bearer"
    }),
    403: problem("The address is denied, the key blocked or its user disabled."),
    429: problem("A limit or a ban denies the call (the verdict's fields).", **{
        "Retry-After": "Seconds to wait."
    }),
}  # fmt: skip


def sdk_endpoints(guard: Guard, guards: IdentityGuards) -> list[Endpoint]:
    """SDK endpoints deciding through ``guard``."""
    routes = Routes(tags=("sdk",), guard=guards.ready)
    identity = guard.identity
    script = _static("sdk.js")
    page = _static("demo.html")
    demo_script = _static("demo.js")
    javascript = Answer("The script.", None, "application/javascript")

    @routes.get("/sdk.js", include_in_schema=False, responses={200: javascript})
    def sdk_js(call: Call) -> Reply:
        """The dependency-free browser SDK."""
        cache = [(b"cache-control", b"public, max-age=300")]
        return bytes_reply(script, b"application/javascript", 200, cache)

    @routes.get(
        "/sdk", include_in_schema=False, responses={200: Answer("The page.", None, "text/html")}
    )
    def sdk_page(call: Call) -> Reply:
        """A page that demonstrates the SDK against this server."""
        csp = [(b"content-security-policy", _PAGE_CSP.encode())]
        return bytes_reply(page, b"text/html; charset=utf-8", 200, csp)

    @routes.get("/sdk/demo.js", include_in_schema=False, responses={200: javascript})
    def demo_js(call: Call) -> Reply:
        """The demo page's script."""
        return bytes_reply(demo_script, b"application/javascript")

    @routes.post(
        "/sdk/check",
        body=CheckBody,
        body_required=False,
        responses={
            200: Answer("Allowed (the verdict and the limit's state).", schemas.Verdict),
            **_DENIALS,
        },
    )
    async def check(call: Call) -> Reply:
        """Decide one call (debiting ``cost``) without forwarding it. The body is optional:
        the key may come in a header, and the cost defaults to 1."""
        body: CheckBody = call.data or CheckBody()
        bearer, header_key = presented_credentials(call)
        ip = call.client_ip
        verdict = await guard.check(
            ip, bearer=bearer, api_key=body.api_key or header_key, cost=body.cost
        )
        await identity.request_log.append(
            kind="check",
            ip=ip,
            endpoint=body.endpoint,
            method=body.method.upper(),
            subject=verdict.subject,
            allowed=verdict.allowed,
            status=verdict.status,
        )
        return _verdict_reply(verdict)

    @routes.get(
        "/data",
        params=(query("api_key", str, max_length=200, description="the key (or X-API-Key)"),),
        responses={200: Answer("The sample data and the verdict.", schemas.Verdict), **_DENIALS},
    )
    async def data(call: Call) -> Reply:
        """The seeds' protected sample endpoint: needs a key (or token); limited by its tier."""
        bearer, api_key = presented_credentials(call)
        if bearer is None and api_key is None:
            raise AuthenticationError("pass an API key (X-API-Key, api_key=, or Bearer)")
        ip = call.client_ip
        verdict = await guard.check(ip, bearer=bearer, api_key=api_key)
        await identity.request_log.append(
            kind="data", ip=ip, subject=verdict.subject, allowed=verdict.allowed,
            status=verdict.status,
        )  # fmt: skip
        if not verdict.allowed:
            return _verdict_reply(verdict)
        return _verdict_reply(verdict, data={"message": "protected sample data"})

    @routes.post(
        "/sdk/track",
        body=TrackBody,
        body_required=False,
        responses={200: Answer("Recorded.", schemas.Tracked), **_DENIALS},
    )
    async def track(call: Call) -> Reply:
        """Record a call the client made (request log only; debits nothing)."""
        body: TrackBody = call.data or TrackBody()
        bearer, header_key = presented_credentials(call)
        principal = await identity.authenticate(bearer, body.api_key or header_key)
        await identity.request_log.append(
            kind="track",
            ip=call.client_ip,
            subject=principal.subject,
            endpoint=body.endpoint,
            method=body.method.upper(),
            status=body.status if body.status is not None else (body.status_code or 200),
            latency_ms=body.latency_ms if body.latency_ms is not None else body.response_time_ms,
        )
        return json_reply({"tracked": True})

    return routes.endpoints
