"""What one process shares: its settings, configuration, resources and the live gateway.

The composition root (:mod:`gatekeeper.app`) fills a :class:`Runtime` in as it starts the
process; the built-in endpoints and the components read the live state through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatekeeper.endpoints import Dispatcher
from gatekeeper.types import SystemClock

if TYPE_CHECKING:
    from gatekeeper.component import Component, Context
    from gatekeeper.gateway.builtin.reload import Reloader
    from gatekeeper.gateway.config import GatewayConfig
    from gatekeeper.gateway.flow.flow import Flow
    from gatekeeper.gateway.flow.snapshot import Snapshot
    from gatekeeper.gateway.http.server import Server
    from gatekeeper.settings import Settings
    from gatekeeper.types import Clock

__all__ = ["Runtime"]


@dataclass
class Runtime:
    """What one process shares: settings, config, resources, the live gateway state."""

    settings: Settings
    config: GatewayConfig
    clock: Clock = field(default_factory=SystemClock)
    redis: Any = None
    storage: Any = None
    limiter: Any = None
    database: Any = None
    metrics: Any = None
    context: Context | None = None
    components: list[Component] = field(default_factory=list)
    snapshot: Snapshot | None = None
    flow: Flow | None = None
    server: Server | None = None
    reloader: Reloader | None = None
    dispatcher: Dispatcher = field(default_factory=Dispatcher)
    # The components to start ("module:function"; the composition root fills it in).
    component_specs: list[str] = field(default_factory=list)

    def applied(self, config: GatewayConfig, snapshot: Snapshot) -> None:
        """A reload took ``config`` in: what the process serves from now on."""
        self.config = config
        self.snapshot = snapshot
