"""A configuration, ready to serve: everything one ``gatekeeper.yaml`` decides, built once.

The router, the pools and the proxy, the policies, the services the steps use (the limiter, the
identity guard, the waiting room's gate, the response cache) and each route's plan. A reload
builds a new snapshot and swaps it into the flow; requests in flight finish on the snapshot
they started with (their exchange holds it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatekeeper.gateway.flow.subjects import Checks

if TYPE_CHECKING:
    from gatekeeper.client_ip import TrustedProxies
    from gatekeeper.gateway.flow.routing import Router
    from gatekeeper.gateway.http.messages import ResponseCache
    from gatekeeper.gateway.upstream.proxy import Proxy

__all__ = ["Snapshot"]


@dataclass(eq=False)
class Snapshot:
    """One configuration, ready to serve (see the module docstring).

    ``guard`` is the identity guard (routes with ``auth``, the deny list), ``gate`` the
    waiting room's gate factory (``gate(tenant)``), ``cache`` the response cache of routes that
    cache; each may be None.
    """

    router: Router
    proxy: Proxy
    pools: dict[str, Any]
    trusted: TrustedProxies
    policies: dict[str, Any] = field(default_factory=dict)
    limiter: Any = None
    guard: Any = None
    gate: Any = None
    cache: ResponseCache | None = None
    # CORS for the built-in endpoints (``flow.cors.Cors``), or None.
    cors: Any = None
    # id(route) -> the steps its requests go through (``flow.steps.Step`` objects, decided by
    # the flow that serves the snapshot; typed loosely so the snapshot imports no step).
    plans: dict[int, tuple[Any, ...]] = field(default_factory=dict, init=False)
    # The plan of requests no route takes (the built-in endpoints).
    builtin: tuple[Any, ...] = field(default=(), init=False)
    checks: Checks = field(default_factory=Checks, init=False)

    async def start(self) -> None:
        """Start the pools' background work (health checks)."""
        for pool in self.pools.values():
            await pool.start()

    async def stop(self) -> None:
        """Stop the pools and close idle upstream connections."""
        for pool in self.pools.values():
            await pool.stop()
        self.proxy.close()
