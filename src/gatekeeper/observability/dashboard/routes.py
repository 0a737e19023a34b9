"""HTTP routes of the dashboards and of the JSON APIs for people who build their own panels.

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
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gatekeeper.observability.dashboard.rate_status import rate_status as compute_rate_status

if TYPE_CHECKING:
    from gatekeeper.observability.component import ObservabilityComponent

__all__ = ["ASSETS", "build_router"]

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


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def build_router(component: ObservabilityComponent) -> APIRouter:
    """The routes, bound to one component instance."""
    router = APIRouter(tags=["observability"])
    files = {name: _read(name) for name in [*ASSETS, *_PAGES.values()]}

    def page(name: str) -> Response:
        return Response(
            files[_PAGES[name]],
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    @router.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Response:
        return page("dashboard")

    @router.get("/dashboard/waiting-room", include_in_schema=False)
    async def waiting_room() -> Response:
        return page("waiting-room")

    @router.get("/dashboard/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        media = ASSETS.get(name)
        if media is None:
            return JSONResponse({"error": "not_found", "detail": f"no asset {name!r}"}, 404)
        return Response(files[name], media_type=media, headers={"Cache-Control": "no-cache"})

    @router.get("/dashboard/snapshot", summary="The dashboard's latest numbers")
    async def snapshot() -> JSONResponse:
        return JSONResponse(await component.latest(), headers={"Cache-Control": "no-store"})

    @router.get("/dashboard/events", summary="Live numbers as Server-Sent Events (1/s)")
    async def events() -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            view = await component.latest()
            generation = component._generation
            yield f"retry: 2000\nevent: snapshot\nid: {generation}\ndata: {_dumps(view)}\n\n"
            # No is_disconnected() polling: StreamingResponse cancels this generator when the
            # client goes away (it listens for http.disconnect itself).
            while True:
                generation, fresh = await component.next_view(generation, _HEARTBEAT)
                if fresh is None:
                    yield ": idle\n\n"
                else:
                    yield f"event: snapshot\nid: {generation}\ndata: {_dumps(fresh)}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get("/api/metrics", summary="Runtime metrics as flat JSON")
    async def api_metrics() -> JSONResponse:
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
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @router.get("/api/v1/rate-status", summary="Your current rate-limit status on a route")
    async def rate_status(
        request: Request,
        path: str = Query("/api/info", max_length=2048, description="the route's path"),
    ) -> JSONResponse:
        if not path.startswith("/"):
            return JSONResponse(
                {"error": "invalid_path", "detail": "path must start with '/'"}, 422
            )
        client_ip = request.client.host if request.client else "unknown"
        context = component.context
        body = await compute_rate_status(
            request, path, client_ip, context.extras.get("gateway"), context.limiter
        )
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return router
