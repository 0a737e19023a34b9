"""The gateway's own HTTP API, served on the same listener as the proxied routes.

``GET /health`` (liveness), ``GET /ready`` (the store answers and every pool has a healthy
endpoint; 503 otherwise), ``GET /metrics`` (Prometheus text), ``GET /stats`` (JSON snapshot),
``GET /geo/stats`` (geographic routing: ``gatekeeper.gateway.geo.geo_stats``),
``POST /change_strategy`` and ``POST /admin/reload`` (both need
``Authorization: Bearer <GATEKEEPER_ADMIN_TOKEN>``: 401 without credentials, 403 with wrong ones).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from gatekeeper.errors import ConfigurationError, GatekeeperError

if TYPE_CHECKING:
    from gatekeeper.app import Runtime

__all__ = ["RESERVED_PATHS", "builtin_router", "check_admin"]

# Paths the proxy never routes, whatever the configuration says.
RESERVED_PATHS = (
    "/health",
    "/ready",
    "/metrics",
    "/stats",
    "/geo/stats",
    "/change_strategy",
    "/admin",
)


def check_admin(request: Request, runtime: Runtime) -> JSONResponse | None:
    """``None`` when the request carries the admin token, else the 401/403 response."""
    token = runtime.settings.admin_token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header or scheme.lower() != "bearer" or not given:
        return JSONResponse(
            {"error": "unauthorized", "detail": "send Authorization: Bearer <admin token>"},
            status_code=401,
            headers={"www-authenticate": "Bearer"},
        )
    if token is None or not hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    ):
        return JSONResponse(
            {"error": "forbidden", "detail": "the admin token is wrong or not configured"},
            status_code=403,
        )
    return None


class StrategyChange(BaseModel):
    """Body of ``POST /change_strategy`` (``pool`` may be left out when there is one pool)."""

    strategy: str
    pool: str | None = None


def builtin_router(runtime: Runtime) -> APIRouter:
    """The built-in routes, reading the live state through ``runtime``."""
    router = APIRouter(tags=["gateway"])

    @router.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "healthy"}

    @router.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness: the limit store answers and each pool has a healthy endpoint."""
        checks: dict[str, Any] = {}
        ok = True
        storage = runtime.storage
        if storage is not None:
            try:
                await storage.ping()
                checks["store"] = "ok"
            except GatekeeperError as exc:
                checks["store"] = f"unavailable: {exc}"
                ok = False
        pools: dict[str, str] = {}
        state = runtime.snapshot
        for name, pool in state.pools.items() if state is not None else ():
            endpoints = pool.snapshot().get("endpoints", [])
            healthy = sum(1 for e in endpoints if e.get("healthy", True))
            pools[name] = f"{healthy}/{len(endpoints)} healthy"
            ok = ok and healthy > 0
        checks["pools"] = pools
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition."""
        from gatekeeper.observability.metrics import CONTENT_TYPE

        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)

    @router.get("/stats")
    async def stats() -> dict[str, Any]:
        """A JSON snapshot: pools (strategy, endpoints, health, breakers), limiter, cache."""
        state = runtime.snapshot
        body: dict[str, Any] = {"pools": {}, "connections": {}}
        if state is not None:
            body["pools"] = {name: pool.snapshot() for name, pool in state.pools.items()}
            body["connections"] = state.proxy.stats()
            cache = state.cache
            if cache is not None and hasattr(cache, "stats"):
                stats = cache.stats
                body["cache"] = stats() if callable(stats) else stats
        limiter = runtime.limiter
        if limiter is not None:
            body["limiter"] = limiter.stats.as_dict()
        server = runtime.server
        body["in_flight"] = server.in_flight if server is not None else 0
        body["tunnels"] = server.tunnels if server is not None else 0
        return body

    @router.get("/geo/stats")
    async def geo_stats() -> JSONResponse:
        """Geographic routing: requests by datacenter, region and country, failovers,
        unresolved lookups, distance percentiles, the datacenters and the database."""
        from gatekeeper.gateway.geo import geo_stats

        state = runtime.snapshot
        status, body = geo_stats(state.geo if state is not None else None)
        return JSONResponse(body, status_code=status)

    @router.post("/change_strategy")
    async def change_strategy(request: Request, change: StrategyChange) -> JSONResponse:
        """Switch a pool's balancing strategy at run time (admin)."""
        denied = check_admin(request, runtime)
        if denied is not None:
            return denied
        state = runtime.snapshot
        pools = state.pools if state is not None else {}
        name = change.pool
        if name is None:
            if len(pools) != 1:
                return _unprocessable(f"name the pool: one of {sorted(pools)}")
            name = next(iter(pools))
        pool = pools.get(name)
        if pool is None:
            return _unprocessable(f"unknown pool {name!r} (one of {sorted(pools)})")
        try:
            pool.set_strategy(change.strategy)
        except (ConfigurationError, ValueError) as exc:
            return _unprocessable(str(exc))
        return JSONResponse({"pool": name, "strategy": change.strategy, "status": "changed"})

    @router.post("/admin/reload")
    async def reload(request: Request) -> JSONResponse:
        """Reload the configuration file; an invalid file is refused and the old one stays."""
        denied = check_admin(request, runtime)
        if denied is not None:
            return denied
        if runtime.reloader is None:
            return JSONResponse(
                {"error": "not_reloadable", "detail": "this process has no configuration file"},
                status_code=409,
            )
        from gatekeeper.gateway.config import ConfigFileError

        try:
            await runtime.reloader.reload()
        except ConfigFileError as exc:
            return JSONResponse(
                {"error": "invalid_configuration", "problems": exc.problems}, status_code=422
            )
        return JSONResponse({"status": "reloaded", "generation": runtime.reloader.generation})

    return router


def _unprocessable(detail: str) -> JSONResponse:
    return JSONResponse({"error": "unprocessable", "detail": detail}, status_code=422)
