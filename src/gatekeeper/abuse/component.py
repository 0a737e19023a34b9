"""The abuse component: builds the detector from the file's ``abuse:`` section, publishes it
as ``context.abuse`` (the gateway's accounting observes through it), hooks the
identity's failed logins, runs the background evaluation, serves the flagged list.

Counting uses the process's limit store (a limiter of its own on the same storage, so its
decisions stay out of the traffic's statistics) and Redis client; bans use the identity's
``BanList`` (without the identity component nothing is banned). The section is read at start:
a reload does not change it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gatekeeper.abuse.admin import abuse_endpoints
from gatekeeper.abuse.allow import AllowList
from gatekeeper.abuse.counters import SlidingCounters
from gatekeeper.abuse.detector import Detector
from gatekeeper.abuse.distinct import DistinctCounters
from gatekeeper.abuse.flags import FlaggedList
from gatekeeper.abuse.patterns import PATTERNS, Rule
from gatekeeper.gateway.config import AbuseConfig
from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.storage.memory import MemoryStorage

if TYPE_CHECKING:
    from gatekeeper.component import Context
    from gatekeeper.endpoints import Endpoint
    from gatekeeper.identity.service import Identity

__all__ = ["AbuseComponent", "build_detector", "create_component", "rules_of"]

logger = logging.getLogger("gatekeeper.abuse")

_DEADLINE = 1.0  # seconds for one batch of counters on the limit store


def rules_of(config: AbuseConfig) -> dict[str, Rule]:
    """The enabled patterns' rules."""
    rules: dict[str, Rule] = {}
    for name in PATTERNS:
        pattern = getattr(config, name)
        if pattern.enabled:
            ban = config.ban if pattern.ban is None else pattern.ban
            rules[name] = Rule(name, pattern.threshold, pattern.window, ban)
    return rules


def build_detector(context: Context, config: AbuseConfig) -> Detector:
    """A detector on ``context``'s store and Redis (in process without them)."""
    clock = context.clock
    shared: Any = context.limiter
    storage = shared.storage if shared is not None else MemoryStorage(clock=clock)
    # Nobody waits for these decisions: a longer deadline than the traffic's (a slow batch
    # still counts, instead of failing open and counting nothing).
    limiter = Limiter(storage, clock=clock, deadline=_DEADLINE)
    prefix = str(getattr(storage, "prefix", "gk"))  # (every abuse key under the store's prefix)
    flags = FlaggedList(
        context.redis, clock, ttl=config.flag_ttl, max_entries=config.max_flagged, prefix=prefix
    )
    return Detector(
        rules_of(config),
        sliding=SlidingCounters(limiter, clock),
        distinct=DistinctCounters(context.redis, clock, prefix=prefix),
        flags=flags,
        clock=clock,
        allow=AllowList(config.allow_networks, config.allow_keys),
        events=lambda: context.events,
        queue_max=config.queue_max,
    )


class AbuseComponent:
    """Detection between ``start`` and ``stop``; the flagged list's endpoints."""

    name = "abuse"

    def __init__(self, context: Context, config: AbuseConfig | None = None) -> None:
        if config is None:
            config = context.config.abuse if context.config is not None else AbuseConfig()
        self.context = context
        self.config = config
        self.detector = build_detector(context, config) if config.enabled else None
        if self.detector is not None:
            context.abuse = self.detector
        self._identity: Identity | None = None

    def endpoints(self) -> list[Endpoint]:
        context = self.context
        # (The identity's admin guard also admits admin users; else the admin token.)
        admin = context.users_guard or context.admin_guard
        identity = context.identity
        audit = identity.audit.record if identity is not None else None
        return abuse_endpoints(self.detector, admin, context.operator_guard, audit)

    async def start(self) -> None:
        detector = self.detector
        if detector is None:
            return
        identity = self.context.identity
        if identity is not None:
            detector.bans = identity.bans
            identity.login_failure_hooks.append(detector.login_failed)
            self._identity = identity
        elif any(rule.ban for rule in detector.rules.values()):
            logger.warning("abuse: bans are configured but the identity component is not running")
        await detector.start()

    async def stop(self) -> None:
        detector = self.detector
        if detector is None:
            return
        if self._identity is not None:
            self._identity.login_failure_hooks.remove(detector.login_failed)
            self._identity = None
        await detector.stop()


def create_component(context: Context) -> AbuseComponent:
    return AbuseComponent(context)
