"""Endpoints of the dashboards and of the JSON APIs for people who build their own panels.

=============================== =================================================================
``GET /dashboard``              live traffic, upstream pools (strategy switch), cache, queues,
                                top limited keys and IPs, recent log lines, the burst demo
``GET /dashboard/waiting-room`` per tenant: queue length, admission rate, ETA, abandonment
``GET /dashboard/events``       Server-Sent Events: one ``snapshot`` event per second
``GET /dashboard/snapshot``     the latest snapshot as JSON
``GET /dashboard/static/<f>``   the pages' CSS and JavaScript (no CDN: everything is served here)
``GET /api/metrics``            runtime figures as flat JSON (seed 002)
``GET /api/v1/rate-status``     the caller's limits on a route (seed 003)
=============================== =================================================================

Everything but ``/api/v1/rate-status`` (the caller's own standing) is operational: the
operator guard (the admin token, or a client in ``operator_networks``) protects it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any, Protocol

from pydantic import BaseModel

from gatekeeper.endpoints import (
    PUBLIC,
    Answer,
    Call,
    Endpoint,
    Reply,
    Routes,
    StreamReply,
    bytes_reply,
    json_reply,
    path,
    problem,
    problem_reply,
    query,
)
from gatekeeper.observability.dashboard.rate_status import rate_status as compute_rate_status

__all__ = ["ASSETS", "LiveViews", "dashboard_endpoints"]

# Pages may load scripts, styles and data from Gatekeeper itself only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
ASSETS: dict[str, str] = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "waiting-room.js": "text/javascript; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
}
_PAGES = {"dashboard": "dashboard.html", "waiting-room": "waiting-room.html"}
_HEARTBEAT = 15.0  # seconds between SSE comments on an idle stream (keeps proxies from closing)
_NO_STORE = [(b"cache-control", b"no-store")]
_OBJECT: dict[str, Any] = {"type": "object"}
_NUMBER = {"type": ["number", "null"]}


class RateStatus(BaseModel):
    client_ip: str
    path: str
    route: str | None
    limits: list[dict[str, Any]]
    limited: bool
    # Seed 003's names: requests counted in the window, seconds until it resets, and whether
    # the next request would be refused.
    blocked: bool
    limit: int | None = None
    remaining: int | None = None
    current_count: int | None = None
    window_seconds: float | None = None
    reset_in: float | None = None
    ttl_seconds: float | None = None
    retry_after: float | None = None


_API_METRICS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "requests_per_second": _NUMBER,
        "allowed_per_second": _NUMBER,
        "limited_per_second": _NUMBER,
        "errors_per_second": _NUMBER,
        "latency_ms": _OBJECT,
        "stale": {"type": "boolean"},
    },
}


class LiveViews(Protocol):
    """What the endpoints read (the observability component): the context, the latest view
    and the next one."""

    @property
    def context(self) -> Any: ...

    @property
    def generation(self) -> int: ...

    async def latest(self) -> dict[str, Any]: ...

    async def next_view(self, after: int, wait: float) -> tuple[int, dict[str, Any] | None]: ...


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def dashboard_endpoints(component: LiveViews) -> list[Endpoint]:
    """The endpoints, bound to one component instance."""
    operator = component.context.operator_guard
    routes = Routes(tags=("observability",), guard=operator)
    files = {name: _read(name) for name in [*ASSETS, *_PAGES.values()]}
    page_headers = [(b"content-security-policy", CSP.encode()), (b"cache-control", b"no-cache")]
    html = Answer("The page.", None, "text/html")

    def page(name: str) -> Reply:
        return bytes_reply(files[_PAGES[name]], b"text/html; charset=utf-8", 200, page_headers)

    @routes.get("/dashboard", include_in_schema=False, responses={200: html})
    def dashboard(call: Call) -> Reply:
        return page("dashboard")

    @routes.get("/dashboard/waiting-room", include_in_schema=False, responses={200: html})
    def waiting_room(call: Call) -> Reply:
        return page("waiting-room")

    @routes.get(
        "/dashboard/static/{name}",
        include_in_schema=False,
        params=(path("name", str, max_length=64),),
        responses={200: Answer("The asset.", None, "text/plain"), 404: problem("No such asset.")},
    )
    def static(call: Call) -> Reply:
        name = call.params["name"]
        media = ASSETS.get(name)
        if media is None:
            return problem_reply(404, "not_found", f"no asset {name!r}")
        headers = [(b"cache-control", b"no-cache")]
        return bytes_reply(files[name], media.encode(), 200, headers)

    @routes.get(
        "/dashboard/snapshot",
        summary="The dashboard's latest numbers",
        responses={200: Answer("The latest snapshot.", _OBJECT)},
    )
    async def snapshot(call: Call) -> Reply:
        return json_reply(await component.latest(), headers=_NO_STORE)

    @routes.get(
        "/dashboard/events",
        summary="Live numbers as Server-Sent Events (1/s)",
        responses={200: Answer("A stream of `snapshot` events.", None, "text/event-stream")},
    )
    def events(call: Call) -> StreamReply:
        async def stream() -> AsyncIterator[bytes]:
            view = await component.latest()
            generation = component.generation
            first = f"retry: 2000\nevent: snapshot\nid: {generation}\ndata: {_dumps(view)}\n\n"
            yield first.encode()
            while not call.is_disconnected():
                generation, fresh = await component.next_view(generation, _HEARTBEAT)
                if fresh is None:
                    yield b": idle\n\n"
                else:
                    yield f"event: snapshot\nid: {generation}\ndata: {_dumps(fresh)}\n\n".encode()

        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
        ]
        return StreamReply(200, headers, stream())

    @routes.get(
        "/api/metrics",
        summary="Runtime metrics as flat JSON",
        responses={200: Answer("The figures.", _API_METRICS)},
    )
    async def api_metrics(call: Call) -> Reply:
        view = await component.latest()
        traffic = view.get("traffic", {})
        totals = view.get("totals", {})
        body = {
            "mode": view.get("mode"),
            "replicas": view.get("replicas"),
            "uptime_seconds": view.get("uptime_seconds"),
            "window_seconds": view.get("window_seconds"),
            "requests_per_second": traffic.get("rps"),
            "allowed_per_second": traffic.get("allowed_rps"),
            "limited_per_second": traffic.get("limited_rps"),
            "errors_per_second": traffic.get("error_rps"),
            "latency_ms": {k[:-3]: traffic.get(k) for k in ("p50_ms", "p95_ms", "p99_ms")},
            "requests": totals.get("requests"),
            "limited": totals.get("limited"),
            "errors": totals.get("errors"),
            "status": totals.get("status"),
            "terminations": totals.get("terminations"),
            "upstreams": totals.get("upstreams"),
            "cache": view.get("cache"),
            "queues": view.get("queues"),
            "policies": view.get("policies"),
            "top_limited_keys": view.get("top_limited_keys"),
            "top_limited_ips": view.get("top_limited_ips"),
            "waiting_rooms": view.get("waiting_rooms"),
            "geo": view.get("geo"),
            "limiter": view.get("limiter"),
            "stale": view.get("stale", False),
        }
        return json_reply(body, headers=_NO_STORE)

    @routes.get(
        "/api/v1/rate-status",
        summary="Your current rate-limit status on a route",
        guard=PUBLIC,
        params=(
            query(
                "path",
                str,
                default="/api/info",
                max_length=2048,
                pattern=r"^/.*$",
                description="the route's path (starts with '/')",
            ),
        ),
        responses={200: Answer("Your standing against each limit of the route.", RateStatus)},
    )
    async def rate_status(call: Call) -> Reply:
        context = component.context
        body = await compute_rate_status(
            call,
            call.params["path"],
            call.client_ip,
            context.snapshot,
            context.limiter,
        )
        return json_reply(body, headers=_NO_STORE)

    return routes.endpoints
