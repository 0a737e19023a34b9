"""The gRPC listener of Envoy's services, on the process's own event loop.

Two servers, one choice (``envoy.server``): ``native`` (the default, :mod:`.h2`: unary calls
over HTTP/2 on a plain asyncio Protocol, no task per call) or ``grpcio`` (grpcio's asyncio
server; about 450 us of CPU per call of its own, see docs/envoy.md). Either runs beside the
HTTP listener on the same loop: the limiter's batched store calls and the identity guard are the
same loop's, so ShouldRateLimit calls from every Envoy connection share the limiter's per-turn
batches with the gateway's own requests. Both serve ``grpc.health.v1.Health/Check`` (the
overall service ``""`` and each Envoy service by name), answering NOT_SERVING from the moment
they start to stop.
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from gatekeeper.envoy.h2 import GrpcError, NativeGrpcServer
from gatekeeper.errors import ConfigurationError

__all__ = ["SERVICES", "GrpcServer", "NativeServer"]

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


class NativeServer:
    """The same services on :class:`~gatekeeper.envoy.h2.NativeGrpcServer`."""

    def __init__(self, host: str, port: int, rls: Any, authz: Any) -> None:
        self.authz = authz
        self.serving = False
        self._server = NativeGrpcServer(
            host,
            port,
            {
                f"/{RATE_LIMIT_SERVICE}/ShouldRateLimit": rls.handle,
                f"/{AUTHORIZATION_SERVICE}/Check": self._check,
                "/grpc.health.v1.Health/Check": self._health,
            },
        )
        self.host = host
        self.port = port

    async def _check(self, payload: bytes) -> bytes:
        try:
            request = external_auth_pb2.CheckRequest.FromString(payload)
        except Exception as exc:  # protobuf's DecodeError
            raise GrpcError(3, f"malformed CheckRequest: {exc}") from None
        response = await self.authz.Check(request, None)
        return response.SerializeToString()  # type: ignore[no-any-return]

    def _health(self, payload: bytes) -> bytes:
        try:
            service = health_pb2.HealthCheckRequest.FromString(payload).service
        except Exception as exc:  # protobuf's DecodeError
            raise GrpcError(3, f"malformed HealthCheckRequest: {exc}") from None
        if service not in SERVICES:
            raise GrpcError(5, f"unknown service {service!r}")
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status).SerializeToString()  # type: ignore[no-any-return]

    async def start(self) -> None:
        try:
            await self._server.start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen for gRPC on {self.host}:{self.port}: {exc}"
            ) from exc
        self.port = self._server.port
        self.serving = True

    async def stop(self, grace: float) -> None:
        self.serving = False
        await self._server.stop(grace)
