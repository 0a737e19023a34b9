"""The gRPC listener of Envoy's services, on the process's own event loop.

grpcio's asyncio server runs beside the HTTP listener: the servicers' awaits (the limiter's
batched store calls, the identity guard) are the same loop's, so ShouldRateLimit calls from
every Envoy connection share the limiter's per-turn batches with the gateway's own requests.
It serves ``grpc.health.v1.Health`` too (the overall service ``""`` and each Envoy service by
name), answering NOT_SERVING from the moment it starts to stop.
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from gatekeeper.errors import ConfigurationError

__all__ = ["SERVICES", "GrpcServer"]

RATE_LIMIT_SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"
SERVICES = ("", RATE_LIMIT_SERVICE, AUTHORIZATION_SERVICE)

# Envoy holds a few long-lived HTTP/2 connections and multiplexes its calls on them.
_OPTIONS = (
    ("grpc.so_reuseport", 1),  # every worker of `serve --workers N` binds the port
    ("grpc.max_concurrent_streams", 1024),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
)


class GrpcServer:
    """``await GrpcServer(host, port, rls, authz).start()`` then ``stop(grace)``."""

    def __init__(self, host: str, port: int, rls: Any, authz: Any) -> None:
        self.host = host
        self.port = port
        self.health = HealthServicer()
        self._server = grpc.aio.server(options=_OPTIONS)
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(rls, self._server)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(authz, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)

    async def start(self) -> None:
        """Bind (``port`` 0 picks a free one, then :attr:`port` says which) and serve."""
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            bound = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigurationError(f"cannot listen for gRPC on {address}: {exc}") from exc
        if bound == 0:  # (older grpcio reports a failed bind this way)
            raise ConfigurationError(f"cannot listen for gRPC on {address}")
        self.port = bound
        await self._server.start()
        for service in SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Health answers NOT_SERVING, new calls are refused, calls in flight get ``grace``
        seconds to finish."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
