"""The waiting room as a :class:`gatekeeper.component.Component` of one process.

Built from the shared :class:`~gatekeeper.component.Context`: Redis when configured (else the
in-process store; the Redis store's calls are bounded by the deadline and breaker of
``deadline.py``), the SQL database for tenants and their secret keys (else an in-memory list
from ``GATEKEEPER_BUSINESS_IDS``), the admin token (which also opens the backend-only calls),
the shared limiter for per-IP limits, the metrics if published as ``context.metrics``. Its
endpoints include the tenant admin endpoints (``admin.py``), opened to admin users and audited
when the identity component runs (its ``context.users_guard`` and audit log). It publishes its
service as ``context.waiting_room`` and a gate factory as ``context.waiting_room_gate``
(``gate("tenant")`` -> :class:`WaitingRoomGate`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from gatekeeper.errors import GatekeeperError, PersistenceError
from gatekeeper.settings import from_environment
from gatekeeper.waitingroom.access import TenantAccess
from gatekeeper.waitingroom.admin import tenant_admin_endpoints
from gatekeeper.waitingroom.api import waitingroom_endpoints
from gatekeeper.waitingroom.config import WaitingRoomSettings
from gatekeeper.waitingroom.config_repository import (
    CachedConfigs,
    ConfigRepository,
    MemoryConfigRepository,
)
from gatekeeper.waitingroom.deadline import StoreGuard
from gatekeeper.waitingroom.gate import WaitingRoomGate
from gatekeeper.waitingroom.memory_store import MemoryStore
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.service import WaitingRoomService
from gatekeeper.waitingroom.sql_repository import SqlConfigRepository
from gatekeeper.waitingroom.store import WaitingRoomStore
from gatekeeper.waitingroom.tenants import parse_business_ids
from gatekeeper.waitingroom.tokens import EdDSASigner, HS256Signer, Signer, TokenCodec
from gatekeeper.waitingroom.worker import AdmissionWorker

if TYPE_CHECKING:
    from gatekeeper.component import Context
    from gatekeeper.endpoints import Endpoint
    from gatekeeper.settings import Settings
    from gatekeeper.types import Clock

__all__ = [
    "WaitingRoomComponent",
    "create_component",
    "preflight",
    "signer_from_settings",
    "store_guard",
]

log = structlog.get_logger("gatekeeper.waitingroom")


def signer_from_settings(
    wr: WaitingRoomSettings, secret: str | None, *, shared: bool, warn: bool = True
) -> Signer:
    """The token signer the settings ask for. ``shared``: tokens must verify on other replicas,
    so a random per-process secret is refused. ``warn``: log when a random secret is chosen
    (not while only checking the settings)."""
    if wr.signing == "eddsa":
        if wr.private_key_file:
            return EdDSASigner.from_pem_file(wr.private_key_file, wr.key_id)
        if shared:
            from gatekeeper.errors import ConfigurationError

            raise ConfigurationError(
                "GATEKEEPER_WAITINGROOM_PRIVATE_KEY_FILE is required for eddsa across replicas"
            )
        return EdDSASigner.generate(wr.key_id)
    if secret:
        return HS256Signer(secret)
    if shared:
        from gatekeeper.errors import ConfigurationError

        raise ConfigurationError("GATEKEEPER_JWT_SECRET is required when Redis is shared")
    if warn:
        log.warning(
            "waitingroom_random_secret", reason="no GATEKEEPER_JWT_SECRET; single process only"
        )
    return HS256Signer.random()


def _signer(
    wr: WaitingRoomSettings, settings: Settings, *, shared: bool, warn: bool = True
) -> Signer:
    secret = wr.jwt_secret or settings.jwt_secret
    return signer_from_settings(
        wr, secret.get_secret_value() if secret else None, shared=shared, warn=warn
    )


def preflight(settings: Settings) -> None:
    """What the component would refuse in ``settings`` (``gatekeeper.preflight``): its own
    ``GATEKEEPER_WAITINGROOM_*`` variables, the token signer (a missing shared secret or key
    file) and the ``GATEKEEPER_BUSINESS_IDS`` entries (a malformed id or secret key)."""
    wr = from_environment(WaitingRoomSettings)
    _signer(wr, settings, shared=bool(settings.redis_url), warn=False)
    parse_business_ids(settings.business_ids)


class WaitingRoomComponent:
    """Endpoints ``/queue/*`` and ``/config``, plus the embedded admission worker."""

    name = "waitingroom"

    def __init__(self, context: Context, settings: WaitingRoomSettings | None = None) -> None:
        self.context = context
        self.settings = settings or from_environment(WaitingRoomSettings)
        wr = self.settings
        shared = context.redis is not None
        # Refused here, before anything starts: a malformed GATEKEEPER_BUSINESS_IDS entry.
        self.business_ids = parse_business_ids(context.settings.business_ids)
        self.store: WaitingRoomStore = (
            RedisStore(
                context.redis,
                prefix=wr.redis_prefix,
                lean=True,
                guard=store_guard(wr, context.clock),
            )
            if context.redis is not None
            else MemoryStore()
        )
        self.repository: ConfigRepository = (
            SqlConfigRepository(context.database, clock=context.clock)
            if context.database is not None
            else MemoryConfigRepository(self.business_ids, clock=context.clock)
        )
        self.configs = CachedConfigs(self.repository, context.clock, wr.config_cache_seconds)
        signer = _signer(wr, context.settings, shared=shared)
        admin = context.settings.admin_token
        access = TenantAccess(
            self.configs,
            context.clock,
            admin_token=admin.get_secret_value() if admin else None,
            ttl=wr.config_cache_seconds,
        )
        metrics = context.metrics
        self.service = WaitingRoomService(
            self.store,
            self.configs,
            TokenCodec(signer),
            context.clock,
            wr,
            limiter=context.limiter,
            metrics=metrics,
            access=access,
        )
        self.worker = AdmissionWorker(self.store, self.configs, context.clock, wr, metrics=metrics)
        self._stop = asyncio.Event()
        self._gates: dict[str, WaitingRoomGate] = {}
        self._task: asyncio.Task[None] | None = None
        context.waiting_room = self.service
        context.waiting_room_gate = self.gate

    def gate(self, tenant: str) -> WaitingRoomGate:
        """The gate protecting routes with ``tenant``'s waiting room (one per tenant)."""
        gate = self._gates.get(tenant)
        if gate is None:
            gate = self._gates[tenant] = WaitingRoomGate(self.service, tenant)
        return gate

    def endpoints(self) -> list[Endpoint]:
        # The identity component (created before this one) publishes its admin guard (admin
        # users) and audit log; without it the admin token alone opens the tenant admin
        # endpoints, unaudited.
        identity = self.context.identity
        return [
            *waitingroom_endpoints(self.service),
            *tenant_admin_endpoints(
                self.service,
                users=self.context.users_guard,
                audit=identity.audit.record if identity is not None else None,
            ),
        ]

    async def start(self) -> None:
        try:
            await self.repository.ensure(self.business_ids)
        except PersistenceError as exc:
            # Serving from memory beats not serving: the tenants of GATEKEEPER_BUSINESS_IDS
            # still work, with default settings that POST /config changes in this process only.
            log.error("waitingroom_config_database_unavailable", error=str(exc))
            self.repository = MemoryConfigRepository(self.business_ids, clock=self.context.clock)
            self.configs.repository = self.repository
        if isinstance(self.store, RedisStore):
            try:  # before the replica reports ready: no request pays for loading a script
                await self.store.warm_up()
            except GatekeeperError as exc:  # the store's guard answers while Redis is down
                log.warning("waitingroom_store_warm_up_failed", error=str(exc))
        self.worker.events = self.context.events
        if self.settings.embedded_worker:
            self._stop.clear()
            self._task = asyncio.create_task(self.worker.run(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=5)
            self._task = None
        if isinstance(self.store, RedisStore):
            await self.store.aclose()


def store_guard(wr: WaitingRoomSettings, clock: Clock) -> StoreGuard:
    """The deadline and breaker of the Redis store, from the settings."""
    return StoreGuard(
        deadline=wr.store_deadline_seconds,
        worker_deadline=wr.worker_deadline_seconds,
        failure_threshold=wr.store_breaker_failures,
        cooldown=wr.store_breaker_cooldown_seconds,
        clock=clock,
    )


def create_component(context: Context) -> WaitingRoomComponent:
    """The factory named in ``gatekeeper.app.COMPONENT_FACTORIES``."""
    return WaitingRoomComponent(context)
