"""The gateway's own HTTP API, served on the same listener as the proxied routes.

``GET /health`` (liveness, answered synchronously), ``GET /ready`` (this replica can serve:
503 only while it drains; a store that does not answer, a limiter deciding without it or a pool
without a healthy endpoint make it ``degraded``, still 200, since every replica shares them and
taking all of them out of a Service would stop what still works), ``GET /metrics`` (Prometheus
text),
``GET /stats`` (JSON snapshot) and ``GET /geo/stats`` (geographic routing) for operators (the
admin token, or a client in ``operator_networks``), ``POST /change_strategy`` and
``POST /admin/reload`` (the admin token: 401 without credentials, 403 with wrong ones).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from gatekeeper import __version__
from gatekeeper.endpoints import (
    JSON,
    Answer,
    Call,
    Endpoint,
    Reply,
    Routes,
    json_reply,
    problem,
)
from gatekeeper.endpoints import problem_reply as _problem
from gatekeeper.errors import ConfigurationError, GatekeeperError
from gatekeeper.observability.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from gatekeeper.runtime import Runtime

__all__ = ["RESERVED_PATHS", "builtin_endpoints"]

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

# The cheapest answer the gateway gives: built once.
_HEALTHY = Reply(200, [(b"content-type", JSON)], b'{"status":"healthy"}')
_METRICS_TYPE = [(b"content-type", CONTENT_TYPE.encode())]


class StrategyChange(BaseModel):
    """Body of ``POST /change_strategy`` (``pool`` may be left out when there is one pool)."""

    strategy: str = Field(max_length=64)
    pool: str | None = Field(default=None, max_length=200)


class Health(BaseModel):
    status: str


# How long /ready waits for the limit store's PING.
_STORE_PING_SECONDS = 0.5


class Readiness(BaseModel):
    status: str = Field(description="``ready``, ``degraded`` (serving) or ``not_ready`` (draining)")
    checks: dict[str, Any]
    degraded: list[str] = Field(description="the parts serving degraded")


class StrategyChanged(BaseModel):
    pool: str
    strategy: str
    status: str


class Reloaded(BaseModel):
    status: str
    generation: int


class Summary(BaseModel):
    name: str
    version: str
    links: dict[str, str]


_METRICS = Answer("Prometheus text exposition.", {"type": "string"}, CONTENT_TYPE)


def _load_balancer(pools: dict[str, Any]) -> dict[str, Any]:
    """Per pool: its strategy, and each endpoint's requests and health (seed 004's view)."""
    return {
        name: {
            "strategy": pool["strategy"],
            "endpoints": [
                {key: endpoint[key] for key in ("address", "healthy", "requests", "in_flight")}
                for endpoint in pool["endpoints"]
            ],
        }
        for name, pool in pools.items()
    }


def _cache_summary(stats: dict[str, Any] | None) -> dict[str, Any]:
    """Hits, misses, hit ratio, entries and bytes (zeros when no route caches), plus the
    cache's own counters."""
    if stats is None:
        return {"enabled": False, "hits": 0, "misses": 0, "hit_ratio": 0.0, "entries": 0,
                "bytes": 0}  # fmt: skip
    hits = int(stats.get("hits", 0))
    misses = int(stats.get("misses", 0))
    served = hits + int(stats.get("stale_hits", 0))  # answered from the cache, stale included
    looked = served + misses
    return {
        **stats,
        "enabled": True,
        "hits": hits,
        "misses": misses,
        "hit_ratio": round(served / looked, 4) if looked else 0.0,
        "entries": int(stats.get("responses", stats.get("records", 0))),
        "bytes": int(stats.get("total_bytes", 0)),
    }


def builtin_endpoints(runtime: Runtime) -> list[Endpoint]:
    """The gateway's endpoints, reading the live state through ``runtime``."""
    context = runtime.context
    assert context is not None, "the composition root builds the context first"
    routes = Routes(tags=("gateway",))

    # What a visitor of the bare address finds (instead of a 404), unless a route takes "/".
    summary = json_reply(
        {
            "name": "Gatekeeper",
            "version": __version__,
            "links": {
                "docs": "/docs",
                "openapi": "/openapi.json",
                "dashboard": "/dashboard",
                "health": "/health",
                "ready": "/ready",
            },
        }
    )

    @routes.get("/", responses={200: Answer("What this service is, and where to look.", Summary)})
    def index(call: Call) -> Reply:
        """A small summary: name, version, links to the documentation and the dashboard."""
        return summary

    @routes.get("/health", responses={200: Answer("The process answers.", Health)})
    def health(call: Call) -> Reply:
        """Liveness: the process answers."""
        return _HEALTHY

    @routes.get(
        "/ready",
        responses={
            200: Answer("This replica serves (``ready``, or ``degraded`` parts).", Readiness),
            503: Answer("This replica is draining: send it nothing new.", Readiness),
        },
    )
    async def ready(call: Call) -> Reply:
        """Readiness: this replica can serve. Degraded parts are named, not made fatal."""
        checks: dict[str, Any] = {}
        parts: dict[str, bool] = {}
        storage = runtime.storage
        if storage is not None:
            try:
                # Bounded well inside a readiness probe's timeout: a frozen Redis must make
                # this answer "degraded", not make the probe time out (a failed probe).
                async with asyncio.timeout(_STORE_PING_SECONDS):
                    await storage.ping()
                checks["store"] = "ok"
            except GatekeeperError as exc:
                checks["store"] = f"unavailable: {exc}"
            except TimeoutError:
                checks["store"] = f"unavailable: no answer within {_STORE_PING_SECONDS} s"
            parts["store"] = checks["store"] != "ok"
        limiter = runtime.limiter
        if limiter is not None:
            checks["limiter"] = limiter.stats.state
            parts["limiter"] = checks["limiter"] != "ok"
        pools: dict[str, str] = {}
        state = runtime.snapshot
        for name, pool in state.pools.items() if state is not None else ():
            endpoints = pool.snapshot().get("endpoints", [])
            healthy = sum(1 for e in endpoints if e.get("healthy", True))
            pools[name] = f"{healthy}/{len(endpoints)} healthy"
            parts[f"pool:{name}"] = healthy == 0
        checks["pools"] = pools
        if runtime.metrics is not None:
            runtime.metrics.degraded_parts(parts)
        degraded = [part for part, bad in parts.items() if bad]
        server = runtime.server
        if server is not None and server.closing:
            status, code = "not_ready", 503
        else:
            status, code = ("degraded" if degraded else "ready"), 200
        return json_reply({"status": status, "checks": checks, "degraded": degraded}, code)

    @routes.get("/metrics", guard=context.operator_guard, responses={200: _METRICS})
    def metrics(call: Call) -> Reply:
        """Prometheus text exposition."""
        return Reply(200, _METRICS_TYPE, runtime.metrics.render())

    @routes.get(
        "/stats",
        guard=context.operator_guard,
        responses={200: Answer("Pools, connections, limiter and cache.", {"type": "object"})},
    )
    def stats(call: Call) -> Reply:
        """A JSON snapshot: pools (strategy, endpoints, health, breakers), the load balancer
        and the cache at a glance, limiter, connections in flight."""
        state = runtime.snapshot
        body: dict[str, Any] = {"pools": {}, "connections": {}}
        cache_stats: dict[str, Any] | None = None
        if state is not None:
            body["pools"] = {name: pool.snapshot() for name, pool in state.pools.items()}
            body["connections"] = state.proxy.stats()
            cache = state.cache
            if cache is not None and hasattr(cache, "stats"):
                found = cache.stats
                cache_stats = found() if callable(found) else found
        body["load_balancer"] = _load_balancer(body["pools"])
        body["cache"] = _cache_summary(cache_stats)
        limiter = runtime.limiter
        if limiter is not None:
            body["limiter"] = limiter.stats.as_dict()
        server = runtime.server
        body["in_flight"] = server.in_flight if server is not None else 0
        body["tunnels"] = server.tunnels if server is not None else 0
        return json_reply(body)

    @routes.get(
        "/geo/stats",
        guard=context.operator_guard,
        responses={
            200: Answer(
                "Requests by datacenter, region and country, failovers, unresolved lookups, "
                "distance percentiles, the datacenters and the database.",
                {"type": "object"},
            ),
            404: problem("The configuration has no geo section."),
        },
    )
    def geo_stats(call: Call) -> Reply:
        """Geographic routing statistics (this worker's)."""
        from gatekeeper.gateway.geo import geo_stats

        state = runtime.snapshot
        status, body = geo_stats(state.geo if state is not None else None)
        if status != 200:
            return _problem(status, body["error"], body["detail"])
        return json_reply(body, status)

    @routes.post(
        "/change_strategy",
        guard=context.admin_guard,
        body=StrategyChange,
        responses={200: Answer("The pool's strategy changed.", StrategyChanged)},
    )
    def change_strategy(call: Call) -> Reply:
        """Switch a pool's balancing strategy at run time (admin)."""
        change: StrategyChange = call.data
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
        return json_reply({"pool": name, "strategy": change.strategy, "status": "changed"})

    @routes.post(
        "/admin/reload",
        guard=context.admin_guard,
        responses={
            200: Answer("The file was applied.", Reloaded),
            409: problem("This process has no configuration file."),
            422: problem("The file is invalid (``problems`` lists every error); nothing changed."),
        },
    )
    async def reload(call: Call) -> Reply:
        """Reload the configuration file; an invalid file is refused and the old one stays."""
        reloader = runtime.reloader
        if reloader is None:
            detail = "this process has no configuration file"
            return _problem(409, "not_reloadable", detail)
        from gatekeeper.gateway.config import ConfigFileError

        try:
            await reloader.reload()
        except ConfigFileError as exc:
            problems = [{"field": "configuration", "problem": p} for p in exc.problems]
            return _problem(422, "invalid_configuration", str(exc), problems=problems)
        return json_reply({"status": "reloaded", "generation": reloader.generation})

    return routes.endpoints


def _unprocessable(detail: str) -> Reply:
    return _problem(422, "unprocessable", detail)
