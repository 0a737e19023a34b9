"""What serves requests: the :class:`Flow`, the handler the listener hands each request to.

It serves the current :class:`~gatekeeper.gateway.flow.snapshot.Snapshot` of the configuration
(each route's plan is decided when a snapshot is taken in: the steps of :mod:`.steps` that apply
to it), lives as long as the process and holds what does not change with the configuration
file: the accounting (metrics and access lines), the built-in endpoints, the background
releases of concurrency leases.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from gatekeeper.endpoints import Reply
from gatekeeper.gateway.builtin.calls import (
    besides_id,
    dispatch_now,
    serve_call,
    write_reply,
    write_result,
)
from gatekeeper.gateway.flow.accounting import Accounting
from gatekeeper.gateway.flow.exchange import TAKEN, Exchange
from gatekeeper.gateway.flow.snapshot import Snapshot
from gatekeeper.gateway.flow.steps import ENTRY, builtin_plan, plan_for

if TYPE_CHECKING:
    from gatekeeper.endpoints import Dispatcher
    from gatekeeper.gateway.http.messages import ProxyRequest
    from gatekeeper.gateway.http.protocol import HttpProtocol
    from gatekeeper.limits.decision import Decision
    from gatekeeper.limits.policy import Check

__all__ = ["Flow"]

logger = logging.getLogger("gatekeeper.gateway")


class Flow:
    """Serves each parsed request on the current :class:`Snapshot` (see the module docstring).

    ``endpoints`` is the table of built-in endpoints (``gatekeeper.endpoints``) for requests no
    route takes; ``accounting`` counts and logs answered requests.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        accounting: Accounting | None = None,
        endpoints: Dispatcher | None = None,
    ) -> None:
        self.snapshot = _planned(snapshot)
        self.accounting = accounting or Accounting()
        self.endpoints = endpoints
        self.server_address: tuple[str, int] | None = None
        self.log = logger
        self._releases: set[asyncio.Task[None]] = set()

    @classmethod
    def for_endpoints(cls, endpoints: Dispatcher) -> Flow:
        """A flow without routes: every request goes to the ``endpoints`` table (tests, and
        serving a component's API on the gateway's listener)."""
        from gatekeeper.client_ip import TrustedProxies
        from gatekeeper.gateway.flow.routing import Router
        from gatekeeper.gateway.upstream.proxy import Proxy

        trusted = TrustedProxies()
        snapshot = Snapshot(router=Router([]), proxy=Proxy({}, trusted), pools={}, trusted=trusted)
        return cls(snapshot, endpoints=endpoints)

    def begin(self, request: ProxyRequest, conn: HttpProtocol) -> None:
        """Serve ``request``: the exchange settles it, now or later."""
        exchange = Exchange(self, self.snapshot, ENTRY, request, conn)
        conn.exchange = exchange
        exchange.proceed()

    def swap(self, snapshot: Snapshot) -> Snapshot:
        """Serve new requests with ``snapshot``; returns the previous one (still in use by
        requests in flight)."""
        old, self.snapshot = self.snapshot, _planned(snapshot)
        return old

    # -- what exchanges ask of the flow ----------------------------------------------------
    def release_lease(
        self, lease: tuple[tuple[Check, ...], str], decision: Decision | None
    ) -> None:
        """Give back the concurrency lease an exchange held (in the background: the answer
        is out already; a store that fails meanwhile lets the lease expire on its own)."""
        limiter = self.snapshot.limiter
        if limiter is None:
            return
        checks, lease_id = lease
        degraded = bool(decision is not None and decision.degraded)
        task = asyncio.get_running_loop().create_task(
            limiter.release(checks, lease_id, degraded=degraded)
        )
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def dispatch(self, ex: Exchange) -> Any:
        """Answer a request no route takes from the endpoint table (or 404). A synchronous
        endpoint whose request body is in hand (``/health``) is answered now, on the
        callback path; the others continue in a task. The answer carries the exchange's
        fields (CORS) as any other does."""
        request = ex.request
        table = self.endpoints
        if table is None:
            ex.answer_problem(404, "not_found", f"no route for {request.path}")
            return TAKEN
        extra = besides_id(ex.fields())
        result = dispatch_now(table, request, ex.conn, ex.rid)
        if result is None:  # the body is still to come, or too large
            serving = serve_call(table, request, ex.conn, ex.rid, extra)
            return ex.run(self._served(ex, serving))
        if isinstance(result, Reply):
            try:
                status = write_reply(ex.conn, request, result, extra)
            except ConnectionError:
                ex.conn.keep_alive = False
                status = 499
            ex.settle(status)
            return TAKEN
        return ex.run(self._served(ex, write_result(ex.conn, request, result, extra)))

    @staticmethod
    async def _served(ex: Exchange, serving: Any) -> None:
        status = 499
        try:
            status = await serving
        finally:
            ex.status = status
        ex.settle(status)

    async def drain(self) -> None:
        """Wait for the background lease releases."""
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)


def _planned(snapshot: Snapshot) -> Snapshot:
    """``snapshot`` with each route's plan decided (once: a snapshot never changes)."""
    plans = snapshot.plans
    if not snapshot.builtin:
        for route in snapshot.router.routes:
            plans[id(route)] = plan_for(route, snapshot)
        snapshot.builtin = builtin_plan(snapshot)
    return snapshot
