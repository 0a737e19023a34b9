"""Envoy's rate limit and ext_authz services as one :class:`gatekeeper.component.Component`.

Off unless a gRPC port is configured (``GATEKEEPER_GRPC_PORT``, else the file's
``envoy.grpc_port``). Built from the shared :class:`~gatekeeper.component.Context`: the shared
limiter decides, the identity component's guard (``context.identity_guard``, looked up per
call) authorizes; the ``envoy:`` section and ``trusted_proxies`` are the configuration's as the
process started (``context.config``: a reload replaces the gateway's snapshot, not these).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from gatekeeper.client_ip import TrustedProxies
from gatekeeper.envoy.authz import AuthorizationService
from gatekeeper.envoy.descriptors import RateLimits, compile_limits
from gatekeeper.envoy.rls import RateLimitService
from gatekeeper.envoy.server import GrpcServer, NativeServer
from gatekeeper.errors import ConfigurationError

if TYPE_CHECKING:
    from gatekeeper.component import Context
    from gatekeeper.endpoints import Endpoint

__all__ = ["EnvoyComponent", "create_component"]

_log = structlog.get_logger("gatekeeper.envoy")


class EnvoyComponent:
    """The gRPC listener with ``ShouldRateLimit``, ``Check`` and health."""

    name = "envoy"

    def __init__(self, context: Context) -> None:
        config = context.config
        if config is None:
            raise ConfigurationError("the envoy component needs the configuration file")
        if context.limiter is None:
            raise ConfigurationError("the envoy component needs the shared limiter")
        self.context = context
        self.config = config
        settings = context.settings
        self.port: int | None = (
            settings.grpc_port if settings.grpc_port is not None else config.envoy.grpc_port
        )
        self.host: str = config.envoy.grpc_host or config.listener.host
        self.grace = float(config.listener.shutdown_grace)
        self._compiled: tuple[Any, RateLimits] | None = None
        self._trusted: tuple[Any, TrustedProxies] | None = None
        self.rls = RateLimitService(context.limiter, self.limits)
        self.authz = AuthorizationService(lambda: context.identity_guard, self.auth_settings)
        self.kind = config.envoy.server
        self.server: GrpcServer | NativeServer | None = None

    def limits(self) -> RateLimits:
        """The compiled ``envoy:`` section (compiled once)."""
        section = self.config.envoy
        compiled = self._compiled
        if compiled is None or compiled[0] is not section:
            compiled = self._compiled = (section, compile_limits(section))
        return compiled[1]

    def auth_settings(self) -> tuple[str, TrustedProxies]:
        """``envoy.auth`` and the configuration's trusted proxies."""
        config = self.config
        trusted = self._trusted
        if trusted is None or trusted[0] is not config:
            trusted = self._trusted = (config, TrustedProxies(config.trusted_proxies))
        return config.envoy.auth, trusted[1]

    def endpoints(self) -> list[Endpoint]:
        return []

    async def start(self) -> None:
        if self.port is None:
            return
        self.limits()  # compiled before the first call
        kind = NativeServer if self.kind == "native" else GrpcServer
        server = kind(self.host, self.port, self.rls, self.authz)
        await server.start()
        self.server = server
        self.port = server.port
        _log.info("envoy_grpc_listening", host=self.host, port=server.port, server=self.kind)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop(self.grace)


def create_component(context: Context) -> EnvoyComponent:
    """The factory named in ``gatekeeper.app.COMPONENT_FACTORIES``."""
    return EnvoyComponent(context)
