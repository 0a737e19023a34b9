"""How the parts of Gatekeeper plug into one process.

The composition root (``gatekeeper.app``) opens the shared resources once, in the lifespan, and
hands them to every component as a :class:`Context`. A component (waiting room, identity, admin,
dashboard, ...) contributes HTTP endpoints (:class:`gatekeeper.endpoints.Endpoint`) and may run
background tasks between ``start`` and ``stop``. Components never open their own Redis pool or
database engine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gatekeeper.endpoints.guards import Guard, Networks, admin_token, operator

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis

    from gatekeeper.abuse.detector import Detector as AbuseDetector
    from gatekeeper.endpoints.endpoint import Endpoint
    from gatekeeper.events.spikes import SpikeDetector
    from gatekeeper.gateway.config import GatewayConfig
    from gatekeeper.gateway.flow.snapshot import Snapshot
    from gatekeeper.identity.guard import Guard as IdentityGuard
    from gatekeeper.identity.service import Identity
    from gatekeeper.observability.access import AccessLog
    from gatekeeper.observability.events import LiveStats
    from gatekeeper.observability.metrics import Metrics
    from gatekeeper.settings import Settings
    from gatekeeper.types import Clock, EventEmitter
    from gatekeeper.waitingroom.gate import WaitingRoomGate
    from gatekeeper.waitingroom.service import WaitingRoomService

__all__ = ["LOOPBACK", "Component", "Context"]

# Who may read operational endpoints without the admin token, unless configured otherwise.
LOOPBACK: Networks = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass
class Context:
    """Resources shared by every component of one process.

    ``redis`` is ``None`` in the embedded mode (no ``GATEKEEPER_REDIS_URL``); components then use
    their in-process implementation. ``limiter`` is a ``gatekeeper.limits.Limiter``;
    ``database`` a ``gatekeeper.persistence.Database`` (typed ``Any`` here so that this module
    imports nothing heavy).

    The rest is what components publish to each other as they are created (each None until its
    publisher runs): the observability recorders (``metrics``, ``access_log``, ``live``), the
    identity component's ``identity`` facade, its request ``identity_guard`` and its
    ``users_guard`` (the admin token or an admin user), the waiting room's ``waiting_room``
    service and its ``waiting_room_gate`` factory (``gate(tenant)``), the abuse component's
    ``abuse`` detector (the gateway's accounting shows it every answered request), the events
    component's ``ratelimit_spikes``, and the gateway's current ``snapshot`` (rebuilt on every
    reload). ``config`` is the configuration file as the process started with it (reloads
    replace the snapshot, not this).

    ``admin_guard`` (the admin token) and ``operator_guard`` (the admin token or a client in the
    operator networks) are the guards of the endpoints every component shares; the composition
    root replaces the operator guard with one reading the configured ``operator_networks``.
    """

    settings: Settings
    clock: Clock
    redis: Redis | None = None
    limiter: Any = None
    database: Any = None
    # Where components report events (None until the events component starts, or without it).
    events: EventEmitter | None = None
    metrics: Metrics | None = None
    access_log: AccessLog | None = None
    live: LiveStats | None = None
    identity: Identity | None = None
    identity_guard: IdentityGuard | None = None
    users_guard: Guard | None = None
    waiting_room: WaitingRoomService | None = None
    waiting_room_gate: Callable[[str], WaitingRoomGate] | None = None
    snapshot: Snapshot | None = None
    # The events component's 429 counter, which the gateway's accounting feeds.
    ratelimit_spikes: SpikeDetector | None = None
    abuse: AbuseDetector | None = None
    config: GatewayConfig | None = None
    admin_guard: Guard = field(init=False)
    operator_guard: Guard = field(init=False)

    def __post_init__(self) -> None:
        self.admin_guard = admin_token(self.admin_token)
        self.operator_guard = operator(self.admin_token, lambda: LOOPBACK)

    def admin_token(self) -> str | None:
        """The configured admin token (None: none is configured)."""
        token = self.settings.admin_token
        return token.get_secret_value() if token is not None else None


class Component(Protocol):
    """A part of the service: endpoints plus a lifetime."""

    name: str

    def endpoints(self) -> Sequence[Endpoint]:
        """Endpoints to add to the built-in API (empty for a component without HTTP)."""
        ...

    async def start(self) -> None:
        """Open what the component needs and start its background tasks."""
        ...

    async def stop(self) -> None:
        """Stop background tasks and let in-flight work finish."""
        ...
