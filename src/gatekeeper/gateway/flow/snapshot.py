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
    from collections.abc import Callable

    from gatekeeper.client_ip import TrustedProxies
    from gatekeeper.gateway.flow.cors import Cors
    from gatekeeper.gateway.flow.routing import Router
    from gatekeeper.gateway.geo.router import GeoRouter
    from gatekeeper.gateway.http.messages import ResponseCache
    from gatekeeper.gateway.upstream.pool import UpstreamPool
    from gatekeeper.gateway.upstream.proxy import Proxy
    from gatekeeper.identity.guard import Guard
    from gatekeeper.limits import Limiter, Policy
    from gatekeeper.waitingroom.gate import WaitingRoomGate

__all__ = ["Snapshot"]


@dataclass(eq=False)
class Snapshot:
    """One configuration, ready to serve (see the module docstring).

    ``guard`` is the identity guard (routes with ``auth``, the deny list), ``gate`` the
    waiting room's gate factory (``gate(tenant)``), ``cache`` the response cache of routes that
    cache, ``geo`` the datacenter chooser of geo routes (``gateway.geo.GeoRouter``); each may
    be None.
    """

    router: Router
    proxy: Proxy
    pools: dict[str, UpstreamPool]
    trusted: TrustedProxies
    policies: dict[str, Policy] = field(default_factory=dict)
    limiter: Limiter | None = None
    guard: Guard | None = None
    gate: Callable[[str], WaitingRoomGate] | None = None
    cache: ResponseCache | None = None
    # CORS for the built-in endpoints, or None.
    cors: Cors | None = None
    geo: GeoRouter | None = None
    # id(route) -> the steps its requests go through (``flow.steps.Step`` objects, decided by
    # the flow that serves the snapshot; typed loosely so the snapshot imports no step).
    plans: dict[int, tuple[Any, ...]] = field(default_factory=dict, init=False)
    # The plan of requests no route takes (the built-in endpoints).
    builtin: tuple[Any, ...] = field(default=(), init=False)
    checks: Checks = field(default_factory=Checks, init=False)

    async def start(self) -> None:
        """Start the background work: the pools' health checks, the geo database's watch."""
        for pool in self.pools.values():
            await pool.start()
        if self.geo is not None:
            await self.geo.start()

    async def stop(self) -> None:
        """Stop the background work and close idle upstream connections."""
        if self.geo is not None:
            await self.geo.stop()
        for pool in self.pools.values():
            await pool.stop()
        self.proxy.close()
