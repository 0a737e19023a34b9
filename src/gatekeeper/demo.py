"""``gatekeeper demo`` and ``gatekeeper serve``: the process entry points of the gateway.

The demo runs everything on one machine with embedded defaults (memory store, SQLite in a
temporary directory): three mock backends on free ports and the gateway in front of them.
``GET /api/info`` is proxied round robin to the backends and limited to 5 requests per 10 s per
client IP (fixed window); ``GET /shop`` goes to the same backends behind the waiting room of the
tenant ``demo`` (visitors without a ready token are sent to ``/queue/wait``); ``GET /health``
answers ``{"status": "healthy"}``.

``GET /api/geo`` is geographic routing: the three backends are three datacenters (us-east,
eu-west, ap-south), each request goes to the nearest to its client, and EU clients stay in the
EU. Every local request comes from loopback, so the demo trusts ``X-Forwarded-For`` from
loopback (``curl -H 'X-Forwarded-For: 81.2.69.142' .../api/geo`` is served by eu-west); its
geolocation database is built at start-up from demo data (``gateway/geo/demo_networks.csv``,
not real geolocation).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.config import GatewayConfig, parse_config
from gatekeeper.settings import Settings

__all__ = ["demo_config", "run_demo", "run_serve"]

logger = logging.getLogger("gatekeeper.demo")

# The waiting room's tenant (business_id) in the demo; its /shop route is protected by it.
DEMO_TENANT = "demo"


# The demo's datacenters: the three backends, in order (name, region, latitude, longitude).
DEMO_DATACENTERS = (
    ("us-east", "us", 39.04, -77.49),  # Ashburn, Virginia
    ("eu-west", "eu", 53.35, -6.26),  # Dublin
    ("ap-south", "ap", 19.08, 72.88),  # Mumbai
)


def demo_geo(database: str, backends: list[str]) -> dict[str, Any]:
    """The demo's ``geo:`` section and its datacenters' pools (one backend each)."""
    upstreams = {
        name: {
            "endpoints": [{"url": url}],
            "health": {"interval": 2, "timeout": 1, "unhealthy_threshold": 2},
        }
        for (name, *_), url in zip(DEMO_DATACENTERS, backends, strict=False)
    }
    geo = {
        "database": database,
        "default_region": "us",
        "regions": {
            "us": {"continents": ["NA", "SA"]},
            "eu": {"continents": ["EU", "AF"]},
            "ap": {"continents": ["AS", "OC"]},
        },
        "datacenters": {
            name: {"region": region, "latitude": lat, "longitude": lon, "upstream": name}
            for name, region, lat, lon in DEMO_DATACENTERS
            if name in upstreams
        },
    }
    return {"geo": geo, "upstreams": upstreams}


def demo_config(
    host: str,
    port: int,
    backends: list[str],
    geo_database: str | None = None,
    envoy_grpc_port: int | None = None,
) -> GatewayConfig:
    """The demo's configuration, one route per seed's scenario, all round robin over
    ``backends``:

    - ``/api``: 5 per 10 s per IP, fixed window (seed 003's burst demo);
    - ``/api/v1``: a token bucket of 5 refilling 1 per second, one bucket per client IP and
      path (seed 001);
    - ``/api/v2/data`` needs a JWT, ``/api/v2/premium`` the premium tier or better (seed 004);
    - ``/api/cached``: answers cached for 30 s when they say nothing of their freshness, with
      ``Cache-Status`` (seed 004);
    - ``/shop`` behind the ``demo`` tenant's waiting room (seed 000);
    - with ``geo_database``, ``/api/geo`` to the nearest of three datacenters (EU clients stay
      in the EU);
    - with ``envoy_grpc_port``, Envoy's rate limit and authorization services on that port
      (:func:`demo_envoy_section`).
    """
    data: dict[str, Any] = {
        "listener": {"host": host, "port": port, "shutdown_grace": 2},
        "policies": {
            "per-ip": {"rate": "5/10s", "algorithm": "fixed_window"},
            "per-ip-and-path": {"rate": "1/second", "burst": 5, "algorithm": "token_bucket"},
        },
        "upstreams": {
            "backends": {
                "strategy": "round_robin",
                "endpoints": [{"url": url} for url in backends],
            }
        },
        "routes": [
            {
                "name": "api",
                "path_prefix": "/api",
                "upstream": "backends",
                "limits": [{"policy": "per-ip", "key": "ip"}],
                "retry": {"attempts": 1},
            },
            {
                "name": "seed-001",
                "path_prefix": "/api/v1",
                "upstream": "backends",
                "limits": [{"policy": "per-ip-and-path", "key": "ip+path"}],
                "retry": {"attempts": 1},
            },
            {
                "name": "data",
                "path_prefix": "/api/v2/data",
                "upstream": "backends",
                "auth": "jwt",
                "retry": {"attempts": 1},
            },
            {
                "name": "premium",
                "path_prefix": "/api/v2/premium",
                "upstream": "backends",
                "tiers": ["premium", "enterprise"],
                "retry": {"attempts": 1},
            },
            {
                "name": "cached",
                "path_prefix": "/api/cached",
                "upstream": "backends",
                "cache": {"default_ttl": 30},
                "retry": {"attempts": 1},
            },
            {
                "name": "shop",
                "path_prefix": "/shop",
                "upstream": "backends",
                "waiting_room": DEMO_TENANT,
                "retry": {"attempts": 1},
            },
        ],
    }
    if envoy_grpc_port is not None:
        data["envoy"] = demo_envoy_section(envoy_grpc_port)
    if geo_database is not None:
        geo = demo_geo(geo_database, backends)
        data["geo"] = geo["geo"]
        data["upstreams"].update(geo["upstreams"])
        # Local requests all come from loopback: believe the X-Forwarded-For of a curl.
        data["trusted_proxies"] = ["127.0.0.0/8", "::1/128"]
        data["routes"].append(
            {
                "name": "geo",
                "path_prefix": "/api/geo",
                "geo": {"residency": [{"from": ["eu"], "to": ["eu"]}]},
                "retry": {"attempts": 1},
            }
        )
    return parse_config(data, "<demo>")


# The demo's Envoy: its listener, and Gatekeeper's gRPC port it asks.
DEMO_ENVOY_PORT = 10000
DEMO_GRPC_PORT = 8081
DEMO_ENVOY_DOMAIN = "demo"


def demo_envoy_section(grpc_port: int) -> dict[str, Any]:
    """The ``envoy:`` section of ``make demo-envoy``: 5 requests a minute per client address
    (fixed window, as envoyproxy/ratelimit counts), decided for Envoy by Gatekeeper."""
    return {
        "grpc_port": grpc_port,
        "grpc_host": "127.0.0.1",
        "domains": [
            {
                "domain": DEMO_ENVOY_DOMAIN,
                "descriptors": [
                    {
                        "key": "remote_address",
                        "name": "per-client",
                        "rate_limit": {"unit": "minute", "requests_per_unit": 5},
                    }
                ],
            }
        ],
    }


def _configure_logging(settings: Settings) -> None:
    try:
        from gatekeeper.observability.logging import configure
    except ImportError:  # pragma: no cover - observability always ships
        logging.basicConfig(level=settings.log_level.upper())
        return
    configure(settings)


def _run(coro: Any) -> None:
    from gatekeeper.gateway.http.server import install_uvloop

    install_uvloop()
    asyncio.run(coro)


def run_demo(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    envoy: bool = False,
    envoy_port: int = DEMO_ENVOY_PORT,
    grpc_port: int = DEMO_GRPC_PORT,
) -> int:
    """Run the demo until interrupted; returns the process exit code. ``envoy``: also Envoy on
    :data:`DEMO_ENVOY_PORT` in front of the same backends, Gatekeeper deciding its limits and
    authorization over gRPC (``make demo-envoy``)."""
    from gatekeeper.app import Runtime, serve
    from gatekeeper.gateway.mock_backend import run_backends
    from gatekeeper.waitingroom.tenants import new_secret

    workdir = tempfile.mkdtemp(prefix="gatekeeper-demo-")
    # The demo tenant's secret key, for this run only: its backend's business_id (verify,
    # finish, /config); browsers send the public id "demo".
    tenant_key = new_secret()
    settings = Settings(
        redis_url="",
        database_url=f"sqlite+aiosqlite:///{Path(workdir) / 'gatekeeper.db'}",
        log_format="console",
        auto_migrate=True,  # a throw-away SQLite file: build its schema at start-up
        business_ids=[f"{DEMO_TENANT}={tenant_key}"],
    )
    if settings.admin_token is None:
        settings.admin_token = SecretStr(secrets.token_urlsafe(18))
    _configure_logging(settings)

    async def main() -> None:
        from gatekeeper.gateway.geo.demo import build_demo_database

        backends = await run_backends(3, host="127.0.0.1")
        database = build_demo_database(Path(workdir) / "geo-demo.mmdb")
        config = demo_config(
            host,
            port,
            [b.url for b in backends],
            str(database),
            envoy_grpc_port=grpc_port if envoy else None,
        )
        proxies: list[Any] = []  # Envoy, started once Gatekeeper answers on gRPC

        def ready(runtime: Runtime) -> None:
            server = runtime.server
            assert server is not None
            token = settings.admin_token.get_secret_value() if settings.admin_token else ""
            print(
                f"Gatekeeper demo on http://{server.host}:{server.port}\n"
                f"  backends: {', '.join(b.url for b in backends)}\n"
                f"  try:      curl http://{server.host}:{server.port}/api/info  "
                f"(5 per 10 s per IP)\n"
                f"  seed 001: curl http://{server.host}:{server.port}/api/v1/orders  "
                f"(token bucket, 5 then 1/s per IP and path)\n"
                f"  JWT:      http://{server.host}:{server.port}/api/v2/data, "
                f"/api/v2/premium (premium tier and up)\n"
                f"  cache:    curl -i http://{server.host}:{server.port}/api/cached  "
                f"(30 s, see Cache-Status)\n"
                f"  geo:      curl -i -H 'X-Forwarded-For: 81.2.69.142' "
                f"http://{server.host}:{server.port}/api/geo  (eu-west answers)\n"
                f"  queue:    http://{server.host}:{server.port}/shop (waiting room)\n"
                f"  admin token (this run): {token}\n"
                f"  tenant {DEMO_TENANT!r} secret key (this run): {tenant_key}\n"
                f"            (business_id for /queue/verify, /queue/finish, /config; "
                f"browsers send {DEMO_TENANT!r})",
                flush=True,
            )
            if envoy:
                proxies.append(_start_envoy(backends, envoy_port, grpc_port))
                print(
                    f"Envoy on http://127.0.0.1:{envoy_port} in front of the same "
                    f"backends, Gatekeeper (gRPC :{grpc_port}) deciding:\n"
                    f"  try:      curl -i http://127.0.0.1:{envoy_port}/api/info  "
                    f"(5 per minute per client)\n"
                    f"  auth:     curl -i http://127.0.0.1:{envoy_port}/api/v2/data  "
                    f"(an X-API-Key or a Bearer token)",
                    flush=True,
                )

        try:
            await serve(settings, config, on_ready=ready)
        finally:
            for proxy in proxies:
                proxy.stop()
            for backend in backends:
                await backend.stop()

    try:
        _run(main())
    except KeyboardInterrupt:  # pragma: no cover - signal handlers normally catch it first
        pass
    return 0


def _start_envoy(backends: list[Any], port: int, grpc_port: int) -> Any:
    """Envoy in front of ``backends``, asking Gatekeeper's gRPC port (started once Gatekeeper
    answers there, so that Envoy's first health check finds it)."""
    from gatekeeper.envoy.bootstrap import bootstrap
    from gatekeeper.envoy.process import EnvoyProcess

    config = bootstrap(
        listen=("127.0.0.1", port),
        backends=[("127.0.0.1", b.port) for b in backends],
        gatekeepers=[("127.0.0.1", grpc_port)],
        domain=DEMO_ENVOY_DOMAIN,
        routes=[("/api/v2/", True), ("/", False)],
    )
    return EnvoyProcess(config, log_level="error").start()


def run_serve(
    path: str | None,
    *,
    host: str | None = None,
    port: int | None = None,
    check: bool = False,
    bare: bool = False,
    workers: int | None = None,
) -> int:
    """``gatekeeper serve``: validate the file, then run the replica (one process, or a
    supervisor and its workers: see ``gatekeeper.workers``) until SIGTERM/SIGINT."""
    from gatekeeper.preflight import StartRefused, load_checked
    from gatekeeper.workers import worker_count

    components = () if bare else None
    try:
        # The same checks with and without --check: --check refuses what serve would refuse.
        settings, config, config_path = load_checked(path, components=components)
        count = worker_count(
            workers if workers is not None else settings.workers,
            shared_store=bool(settings.redis_url),
        )
    except StartRefused as exc:
        for line in exc.problems:
            print(f"gatekeeper serve: {line}", file=sys.stderr)
        return exc.exit_code
    except ConfigurationError as exc:
        print(f"gatekeeper serve: {exc}", file=sys.stderr)
        return 2
    if check:
        print(f"{config_path}: OK")
        return 0
    _configure_logging(settings)
    if not settings.auto_migrate:
        from gatekeeper.persistence.migrate import schema_problem

        problem = schema_problem(settings.database_url)
        if problem is not None:
            print(f"gatekeeper serve: {problem}", file=sys.stderr)
            return 1

    def work(sock: socket.socket | None) -> int:
        from gatekeeper.app import serve

        _run(
            serve(
                settings,
                config,
                host=host,
                port=port,
                sock=sock,
                config_path=config_path,
                components=components,
                on_ready=_freeze_heap,
            )
        )
        return 0

    if count == 1:
        return work(None)
    return _supervise(work, settings, config, host, port, count)


def _supervise(
    work: Callable[[socket.socket], int],
    settings: Settings,
    config: GatewayConfig,
    host: str | None,
    port: int | None,
    count: int,
) -> int:
    """Bind the port once and run ``count`` workers on it (see ``gatekeeper.workers``)."""
    from gatekeeper.workers import Supervisor, bind_listener, remove_metrics_dir

    listener = config.listener
    address = host or listener.host
    number = listener.port if port is None else port
    try:
        sock = bind_listener(address, number, listener.backlog)
    except OSError as exc:
        print(f"gatekeeper serve: cannot listen on {address}:{number}: {exc}", file=sys.stderr)
        return 1
    supervisor = Supervisor(
        work, sock, count, grace=listener.shutdown_grace, metrics_dir=settings.metrics_dir
    )
    try:
        return supervisor.run()
    finally:
        if settings.metrics_dir is None:
            remove_metrics_dir(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _freeze_heap(_runtime: object) -> None:
    """Hide the start-up heap from the cyclic garbage collector.

    Everything built before the listener opens (modules, the app, pools, configuration) lives
    as long as the process; without this, every full collection walks all of it again while
    requests wait. Only this process's command does it: a library caller's heap is its own.
    """
    gc.collect()
    gc.freeze()
