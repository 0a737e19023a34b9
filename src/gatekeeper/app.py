"""The composition root: one process's resources, components, built-in API and gateway.

Extension point — how a part of Gatekeeper plugs in
----------------------------------------------------
Add ONE line to :data:`COMPONENT_FACTORIES` below: ``"package.module:function"``, where
``function(context: gatekeeper.component.Context) -> Component``. At start-up the lifespan
imports each factory (a module that does not exist yet is skipped, so the list may name parts
still being built), calls it with the shared :class:`~gatekeeper.component.Context`, adds the
component's endpoints to the one endpoint table (:class:`gatekeeper.endpoints.Dispatcher`) and
runs its ``start``/``stop``. Components publish what they offer each other in the context's
typed fields (``context.identity_guard``, ``context.waiting_room_gate``, ...); the gateway's
``Snapshot`` is published as ``context.snapshot`` and the Prometheus ``Metrics`` as
``context.metrics``.

What the lifespan opens, in order: the Redis client (when ``GATEKEEPER_REDIS_URL`` is set), the
limit storage and :class:`~gatekeeper.limits.Limiter`, the SQL ``Database`` (when the
persistence package is present), the metrics; then it warms the limit store up (connections
and script ready before the first request) and starts the components. It closes them in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from gatekeeper.client_ip import TrustedProxies
from gatekeeper.component import Component, Context
from gatekeeper.endpoints import ASGIApp, asgi_app, docs_endpoints, operator
from gatekeeper.errors import GatekeeperError
from gatekeeper.gateway.builtin.endpoints import RESERVED_PATHS, builtin_endpoints
from gatekeeper.gateway.cache.config import route_cache
from gatekeeper.gateway.cache.setup import gateway_cache
from gatekeeper.gateway.config import CorsConfig, GatewayConfig
from gatekeeper.gateway.flow.accounting import Accounting
from gatekeeper.gateway.flow.compression import Compression
from gatekeeper.gateway.flow.cors import Cors
from gatekeeper.gateway.flow.flow import Flow
from gatekeeper.gateway.flow.header_rules import HeaderRules, header_rules
from gatekeeper.gateway.flow.routing import LimitRule, RetryPolicy, Route, Router, Timeouts
from gatekeeper.gateway.flow.snapshot import Snapshot
from gatekeeper.gateway.geo import GeoRouter, route_policy
from gatekeeper.gateway.http.tls import server_context
from gatekeeper.gateway.upstream.proxy import Proxy
from gatekeeper.gateway.upstream.upstreams import build_pool
from gatekeeper.runtime import Runtime
from gatekeeper.settings import Settings
from gatekeeper.types import SystemClock, WarmUp

if TYPE_CHECKING:
    from gatekeeper.gateway.http.server import Server
    from gatekeeper.types import Clock

__all__ = [
    "COMPONENT_FACTORIES",
    "Gateway",
    "Runtime",
    "build_snapshot",
    "create_app",
    "lifespan",
    "redis_client",
    "serve",
]

logger = logging.getLogger("gatekeeper.app")

# "module:function" entries, each function(context) -> Component. One line per part.
COMPONENT_FACTORIES: list[str] = [
    "gatekeeper.observability.component:create_component",
    # identity before the waiting room: with auto_migrate it builds the schema tenants live in
    "gatekeeper.identity.component:create_component",
    # events after identity (its admin endpoints take the identity's admin guard)
    "gatekeeper.events.component:create_component",
    "gatekeeper.waitingroom.component:create_component",
    # after identity: hooks its failed logins and bans through its BanList
    "gatekeeper.abuse.component:create_component",
    # after identity: its ext_authz asks identity's guard (gRPC, off unless a port is set)
    "gatekeeper.envoy.component:create_component",
]


def _load_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            logger.info("component %s is not available, skipped", spec)
            return None
        raise
    return getattr(module, attr)


def redis_client(url: str) -> Any:
    """The process's shared Redis client for ``url``: a plain, Sentinel or Cluster client
    (:func:`gatekeeper.redis_client.redis_from_url`). Lazy: nothing connects until first use
    (``serve --check`` builds one to refuse a URL the start-up would refuse)."""
    from gatekeeper.redis_client import redis_from_url

    return redis_from_url(url)


async def _open_resources(runtime: Runtime) -> None:
    from gatekeeper.limits import Limiter, storage_from_url
    from gatekeeper.observability.metrics import Metrics, multiprocess_dir

    settings = runtime.settings
    if settings.redis_url:
        runtime.redis = redis_client(settings.redis_url)
    runtime.storage = storage_from_url(settings.storage_url, clock=runtime.clock)
    limiter = runtime.config.limiter
    runtime.limiter = Limiter(
        runtime.storage,
        clock=runtime.clock,
        deadline=limiter.deadline,
        batch_max=limiter.batch_max,
    )
    if runtime.metrics is None:
        runtime.metrics = Metrics()
        if multiprocess_dir() is not None:
            logger.info("metrics in multiprocess mode")
    # Decisions made without the store and the store's latency are counted per policy.
    runtime.limiter.metrics = runtime.metrics
    try:
        from gatekeeper.persistence import Database
    except ImportError:
        runtime.database = None
    else:
        fresh = bool(runtime.component_specs) and _fresh_sqlite(settings.database_url)
        runtime.database = Database.from_settings(settings)
        if fresh:
            # Like `gatekeeper serve`: a SQLite file that does not exist yet is created at head
            # (it cannot hold a half-built schema), so in-process replicas never run their
            # components on an empty database ("no such table").
            from gatekeeper.persistence.migrate import upgrade

            await upgrade(runtime.database)


def _fresh_sqlite(database_url: str) -> bool:
    """Whether ``database_url`` names a SQLite file that does not exist yet."""
    from pathlib import Path

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database_url)
    except ArgumentError:
        return False  # Database.from_settings names the problem
    name = url.database
    return (
        url.drivername.startswith("sqlite")
        and bool(name)
        and name != ":memory:"
        and (not Path(str(name)).exists())
    )


async def _warm_up(runtime: Runtime, *, connections: int = 4, within: float = 5.0) -> None:
    """Make Redis ready before traffic (the replica reports ready only after this): a fresh
    replica's first decisions would otherwise pay for connecting and loading the script,
    overrun the limiter's deadline and fail open. The limit store opens ``connections``
    connections to every server that holds keys (every primary of a cluster) and loads its
    scripts there (:class:`~gatekeeper.types.WarmUp`); then a few concurrent zero-cost
    decisions run on a key of its own; the shared client connects to every primary. A store
    that is down only logs: the policies' failure modes take over, as they would later."""
    from gatekeeper.limits.policy import Check, Policy, parse_rate
    from gatekeeper.redis_client import warm_up

    storage = runtime.storage
    if storage is None:
        return
    check = Check(Policy("gatekeeper-warmup", parse_rate("1/second")), "warmup", 0)
    try:
        async with asyncio.timeout(within):
            if runtime.redis is not None:
                await _warn_if_one_node_of_a_cluster(runtime.redis)
            await storage.ping()
            if isinstance(storage, WarmUp):
                await storage.warm_up(connections)
            await asyncio.gather(*(storage.decide([[check]]) for _ in range(connections)))
            if runtime.redis is not None:
                await warm_up(runtime.redis, connections=connections)
    except (GatekeeperError, TimeoutError, OSError) as exc:
        logger.warning("limit store warm-up failed, starting anyway: %s", exc)
    except Exception as exc:  # redis-py's own errors (the shared client): never fatal here
        logger.warning("Redis warm-up failed, starting anyway: %s", exc)


async def _warn_if_one_node_of_a_cluster(client: Any) -> None:
    """Say so loudly when a plain ``redis://`` URL names one node of a Redis Cluster: every
    key that lives on another node would fail with MOVED (limits degraded, waiting-room
    tenants 503). Only a warning: the URL parses, so ``serve --check`` (which connects to
    nothing) cannot refuse it, and ``serve`` must not refuse what ``--check`` accepts."""
    from gatekeeper.redis_client import is_cluster

    if is_cluster(client):
        return
    info = await client.info("cluster")
    if int(info.get("cluster_enabled", 0)):
        logger.error(
            "GATEKEEPER_REDIS_URL names one node of a Redis Cluster: keys on the other nodes "
            "will fail with MOVED; use redis+cluster://host1:port1,host2:port2"
        )


async def _close_resources(runtime: Runtime) -> None:
    if runtime.limiter is not None:
        await runtime.limiter.aclose()
    elif runtime.storage is not None:
        await runtime.storage.aclose()
    if runtime.database is not None and hasattr(runtime.database, "dispose"):
        with contextlib.suppress(Exception):
            await runtime.database.dispose()
    if runtime.redis is not None:
        await runtime.redis.aclose()


@contextlib.asynccontextmanager
async def lifespan(runtime: Runtime) -> AsyncIterator[Context]:
    """Open ``runtime``'s resources, build the endpoint table, start the components; on exit,
    stop the components and close the resources, in reverse.

    Step by step: the resources (Redis, limit store and limiter, database, metrics), the
    store's warm-up, the shared :class:`Context` (with the operator guard reading the
    configured ``operator_networks``), each component (its endpoints join the table after the
    gateway's own), the docs endpoints, then every component's ``start``.
    """
    await _open_resources(runtime)
    started: list[Component] = []
    try:
        # (Inside the try: a component that refuses its settings still gets the resources
        # closed behind it.)
        await _warm_up(runtime)
        context = Context(
            settings=runtime.settings,
            clock=runtime.clock,
            redis=runtime.redis,
            limiter=runtime.limiter,
            database=runtime.database,
        )
        context.operator_guard = operator(
            context.admin_token, lambda: runtime.config.operator_networks
        )
        context.metrics = runtime.metrics
        context.config = runtime.config
        runtime.context = context
        table = runtime.dispatcher
        table.extend(builtin_endpoints(runtime))
        for spec in runtime.component_specs:
            factory = _load_factory(spec)
            if factory is None:
                continue
            component = factory(context)
            table.extend(component.endpoints())
            runtime.components.append(component)
        table.extend(docs_endpoints(table, title="Gatekeeper", version="0.1.0"))
        for component in runtime.components:
            await component.start()
            started.append(component)
        yield context
    finally:
        for component in reversed(started):
            try:
                await component.stop()
            except Exception:
                logger.exception("component %s failed to stop", component.name)
        await _close_resources(runtime)


def create_app(runtime: Runtime) -> ASGIApp:
    """The built-in API as an ASGI application whose lifespan opens and closes ``runtime``'s
    resources (for running it under an ASGI server of one's own)."""
    return asgi_app(runtime.dispatcher, lifespan=lambda: lifespan(runtime))


def build_routes(config: GatewayConfig, policies: dict[str, Any]) -> list[Route]:
    """The router's routes from the configuration's ``routes:`` list."""
    routes: list[Route] = []
    for i, rc in enumerate(config.routes):
        routes.append(
            Route(
                name=rc.name or f"route-{i}",
                upstream=rc.upstream or "",  # (a geo route's is chosen per request)
                path_prefix=rc.path_prefix,
                host=rc.host.lower() if rc.host else None,
                methods=frozenset(rc.methods) if rc.methods else None,
                limits=tuple(LimitRule(policies[ref.policy], ref.key) for ref in rc.limits),
                timeouts=Timeouts(rc.timeouts.connect, rc.timeouts.read, rc.timeouts.total),
                retry=RetryPolicy(
                    attempts=rc.retry.attempts,
                    on_status=frozenset(rc.retry.on_status),
                    on_connect_error=rc.retry.on_connect_error,
                    on_timeout=rc.retry.on_timeout,
                ),
                cache=route_cache(rc.cache, rc.name or f"route-{i}"),
                priority=rc.priority,
                strip_prefix=rc.strip_prefix,
                preserve_host=rc.preserve_host,
                ratelimit_headers=rc.ratelimit_headers,
                max_body_bytes=rc.max_body_bytes,
                request_headers=_rules(rc.request_headers, request=True),
                response_headers=_rules(rc.response_headers, request=False),
                compress=_compression(rc.compress),
                waiting_room=rc.waiting_room,
                auth=_auth(rc.auth, rc.tiers),
                tiers=frozenset(rc.tiers) if rc.tiers else None,
                cors=_cors(rc.cors),
                timing=rc.timing,
                geo=route_policy(rc.geo, config.geo) if rc.geo and config.geo else None,
            )
        )
    return routes


def _auth(auth: str, tiers: list[str] | None) -> str | None:
    """The credentials a route asks for: a tier gate needs a principal, so "none" becomes
    "any" on a route with ``tiers``."""
    if auth == "none":
        return "any" if tiers else None
    return auth


def _cors(config: Any) -> Cors | None:
    if config is False:
        return None
    if config is True:
        return CorsConfig().build()
    return config.build()  # type: ignore[no-any-return]


def _compression(config: Any) -> Compression | None:
    if config is False:
        return None
    if config is True:
        return Compression()
    return Compression(config.min_bytes, config.level, tuple(t.lower() for t in config.types))


def _rules(config: Any, *, request: bool) -> HeaderRules | None:
    if config is None:
        return None
    return header_rules("header rules", config.set, config.remove, request=request)


def build_snapshot(runtime: Runtime, config: GatewayConfig) -> Snapshot:
    """A complete :class:`Snapshot` for ``config`` (pools, router, proxy, plans) on
    ``runtime``."""
    policies = {name: pc.build(name) for name, pc in config.policies.items()}
    events = runtime.context.events if runtime.context else None
    pools = {
        name: build_pool(name, uc, clock=runtime.clock, metrics=runtime.metrics, events=events)
        for name, uc in config.upstreams.items()
    }
    trusted = TrustedProxies(config.trusted_proxies)
    max_idle = max((uc.max_idle_connections for uc in config.upstreams.values()), default=128)
    idle_timeout = min((uc.idle_timeout for uc in config.upstreams.values()), default=60.0)
    proxy = Proxy(pools, trusted, max_idle=max_idle, idle_timeout=idle_timeout)
    # The paths of the endpoint table (each component declares its own with its endpoints) and
    # the gateway's own subtrees are never routed: a catch-all route cannot hide them.
    reserved = [*RESERVED_PATHS, *runtime.dispatcher.prefixes()]
    router = Router(build_routes(config, policies), reserved=reserved)
    geo = None
    if config.geo is not None:  # opens the database: refused here when it cannot serve
        previous = runtime.snapshot.geo if runtime.snapshot is not None else None
        stats = previous.stats if previous is not None else None  # counted across reloads
        geo = GeoRouter(config.geo, pools, stats=stats, metrics=runtime.metrics)
    context = runtime.context
    snapshot = Snapshot(
        router=router,
        proxy=proxy,
        pools=pools,
        trusted=trusted,
        limiter=runtime.limiter,
        policies=policies,
        cache=gateway_cache(runtime, config),  # None unless a route enables caching
        gate=context.waiting_room_gate if context is not None else None,
        guard=context.identity_guard if context is not None else None,
        cors=_cors(config.cors),
        geo=geo,
    )
    # (Without a context this is only `serve --check` building the snapshot: nothing to warn of.)
    running = runtime.context is not None
    if running and snapshot.guard is None and any(r.auth is not None for r in router.routes):
        logger.warning("routes with auth answer 503: the identity component is not running")
    if context is not None:
        context.snapshot = snapshot
    return snapshot


class Gateway:
    """One running replica in this event loop: ``await Gateway(...).start()`` then ``stop()``.

    ``components`` overrides :data:`COMPONENT_FACTORIES` (tests pass ``()`` to run the gateway
    alone). ``host``/``port`` override the file's listener (``port=0`` picks a free port).
    """

    def __init__(
        self,
        settings: Settings,
        config: GatewayConfig,
        *,
        host: str | None = None,
        port: int | None = None,
        config_path: str | None = None,
        components: Sequence[str] | None = None,
        clock: Clock | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.runtime = Runtime(settings, config, clock=clock or SystemClock())
        self.sock = sock  # a listening socket bound already (the workers' supervisor's)
        self.runtime.component_specs = (
            list(COMPONENT_FACTORIES) if components is None else list(components)
        )
        self.host = host
        self.port = port
        self.config_path = config_path
        self._lifespan: contextlib.AbstractAsyncContextManager[Context] | None = None

    @property
    def server(self) -> Server:
        assert self.runtime.server is not None, "the gateway is not started"
        return self.runtime.server

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}"

    async def start(self) -> Gateway:
        """Open resources, start components, build the state, bind the listener."""
        from gatekeeper.gateway.builtin.reload import Reloader
        from gatekeeper.gateway.http.server import Server

        runtime = self.runtime
        config = runtime.config
        self._lifespan = lifespan(runtime)
        await self._lifespan.__aenter__()
        try:
            snapshot = build_snapshot(runtime, config)
            context = runtime.context
            access_log = context.access_log if context is not None else None
            spikes = context.ratelimit_spikes if context is not None else None
            abuse = context.abuse if context is not None else None
            flow = Flow(
                snapshot,
                accounting=Accounting(runtime.metrics, access_log, spikes, abuse),
                endpoints=runtime.dispatcher,
            )
            listener = config.listener
            server = Server(
                flow,
                host=self.host or listener.host,
                port=listener.port if self.port is None else self.port,
                backlog=listener.backlog,
                sock=self.sock,
                keepalive_timeout=listener.keepalive_timeout,
                shutdown_grace=listener.shutdown_grace,
                max_header_bytes=listener.max_header_bytes,
                header_timeout=listener.header_timeout,
                tls=(
                    server_context(listener.tls.cert_file, listener.tls.key_file)
                    if listener.tls is not None
                    else None
                ),
            )
            runtime.server = server
            runtime.snapshot = snapshot
            runtime.flow = flow
            await snapshot.start()
            await server.start()
        except BaseException as exc:
            await self._lifespan.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if self.config_path is not None:
            runtime.reloader = Reloader(
                flow,
                lambda config: build_snapshot(runtime, config),
                self.config_path,
                grace=server.shutdown_grace,
                applied=runtime.applied,
            )
        logger.info("gatekeeper listening on http://%s:%d", server.host, server.port)
        return self

    async def stop(self) -> None:
        """Graceful shutdown: listener, in-flight requests, pools, components, resources."""
        runtime = self.runtime
        try:
            if runtime.server is not None:
                await runtime.server.stop()
            if runtime.snapshot is not None:
                await runtime.snapshot.stop()
                # The cache outlives reloads (not in Snapshot.stop): close it once, here.
                cache = runtime.snapshot.cache
                if cache is not None and hasattr(cache, "aclose"):
                    await cache.aclose()
            if runtime.flow is not None:
                await runtime.flow.drain()
        finally:
            if self._lifespan is not None:
                opened, self._lifespan = self._lifespan, None
                await opened.__aexit__(None, None, None)


async def serve(
    settings: Settings,
    config: GatewayConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    config_path: str | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Runtime], None] | None = None,
    components: Sequence[str] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Run one replica until ``stop`` is set (or SIGTERM/SIGINT), then shut down gracefully.

    Start-up, step by step: the lifespan opens the resources, builds the endpoint table and
    starts the components; the snapshot (pools, router, proxy, plans) is built and its health
    checks start; the listener binds; SIGHUP reloads ``config_path``.
    """
    gateway = Gateway(
        settings,
        config,
        host=host,
        port=port,
        config_path=config_path,
        components=components,
        sock=sock,
    )
    await gateway.start()
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        reloader = gateway.runtime.reloader
        if reloader is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                reloader.install_sighup()
        if on_ready is not None:
            on_ready(gateway.runtime)
        await stop.wait()
        logger.info("shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await gateway.stop()
