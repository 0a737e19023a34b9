"""Identity, admin and SDK routes as one :class:`gatekeeper.component.Component`.

Built from the shared :class:`~gatekeeper.component.Context`: the SQL database (required: it
must be migrated, see ``gatekeeper migrate``), Redis when configured (shared caches, bans, usage
and revocations; else in-process), the shared limiter, the clock. Publishes the
:class:`~gatekeeper.identity.service.Identity` facade as ``context.identity`` and the
:class:`~gatekeeper.identity.guard.Guard` as ``context.identity_guard`` for the gateway, and
its admin endpoints' guard (the admin token or an admin user) as ``context.users_guard`` for
other components' admin endpoints (the waiting room's tenants).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from gatekeeper.errors import ConfigurationError, PersistenceError
from gatekeeper.identity.admin import admin_endpoints
from gatekeeper.identity.api import auth_endpoints
from gatekeeper.identity.guard import Guard
from gatekeeper.identity.http import identity_guards
from gatekeeper.identity.service import Identity, IdentityOptions
from gatekeeper.identity.tokens import KeyRing
from gatekeeper.persistence.migrate import check_migrated, upgrade

if TYPE_CHECKING:
    from gatekeeper.component import Context
    from gatekeeper.endpoints import Endpoint
    from gatekeeper.settings import Settings

_log = structlog.get_logger("gatekeeper.identity")

__all__ = ["IdentityComponent", "create_component", "options_from_context", "preflight"]


def options_from_context(context: Context) -> IdentityOptions:
    """Options from the process settings: admin token, JWT keys (``kid:secret,...``)."""
    settings = context.settings
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    if settings.jwt_secret is None and context.redis is not None:
        _log.warning(
            "identity_random_jwt_key",
            reason="GATEKEEPER_JWT_SECRET is unset: tokens issued here fail on other replicas",
        )
    return IdentityOptions(admin_token=admin or None, keys=_keys(settings))


def _keys(settings: Settings) -> KeyRing | None:
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    return KeyRing.parse(secret) if secret else None


def preflight(settings: Settings) -> None:
    """What the factory would refuse in ``settings`` (``gatekeeper.preflight``): the JWT keys."""
    _keys(settings)


class IdentityComponent:
    """``/auth/*``, ``/usage``, ``/admin/*``, ``/logs`` and the SDK endpoints."""

    name = "identity"

    def __init__(
        self,
        context: Context,
        options: IdentityOptions | None = None,
        *,
        identity: Identity | None = None,
        check_schema: bool = True,
    ) -> None:
        if context.database is None:
            raise ConfigurationError("the identity component needs the SQL database")
        if context.limiter is None:
            raise ConfigurationError("the identity component needs the shared limiter")
        self.context = context
        self.check_schema = check_schema
        self.auto_migrate = bool(getattr(context.settings, "auto_migrate", False))
        self.identity = identity or Identity(
            context.database,
            context.clock,
            context.limiter,
            context.redis,
            options or options_from_context(context),
        )
        self.guard = Guard(self.identity)
        self.problem: str | None = None
        self.guards = identity_guards(self.identity, lambda: self.problem)
        context.identity = self.identity
        context.identity_guard = self.guard
        context.users_guard = self.guards.admin

    def endpoints(self) -> list[Endpoint]:
        from gatekeeper.sdk.routes import sdk_endpoints

        guards = self.guards
        return [
            *auth_endpoints(self.identity, guards),
            *admin_endpoints(self.identity, guards),
            *sdk_endpoints(self.guard, guards),
        ]

    async def start(self) -> None:
        """Refuse an unmigrated database (or migrate it, when the settings ask to), then
        subscribe to cache invalidations."""
        if self.auto_migrate:
            await upgrade(self.identity.db)
        if self.check_schema:
            try:
                await check_migrated(self.identity.db)
            except PersistenceError as exc:
                # `gatekeeper serve` refuses this database before it gets here; embedded uses
                # keep the rest of the process up and answer 503 on the identity routes.
                self.problem = str(exc)
                _log.error("identity_unavailable", reason=self.problem)
        self.identity.events = self.context.events
        await self.identity.start()

    async def stop(self) -> None:
        await self.identity.stop()


def create_component(context: Context) -> IdentityComponent:
    """The factory named in ``gatekeeper.app.COMPONENT_FACTORIES``."""
    return IdentityComponent(context)
