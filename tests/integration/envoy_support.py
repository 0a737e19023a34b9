"""Helpers of the Envoy tests: Gatekeeper replicas with the gRPC services, requests to them.

A replica here is the real thing: ``Gateway`` with the identity and envoy components, the shared
limiter on the test Redis, SQLite for identity. Each test names its own rate limit domain,
beginning with its ``redis_prefix``, so its counters (``gk:{<domain>|...}:...``) are its own and
removed after it.
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.gateway.config import parse_config
from gatekeeper.settings import Settings

__all__ = [
    "COMPONENTS",
    "JWT_SECRET",
    "descriptor",
    "envoy_section",
    "grpc_port",
    "rl_request",
    "start_replica",
]

COMPONENTS = (
    "gatekeeper.identity.component:create_component",
    "gatekeeper.envoy.component:create_component",
)
JWT_SECRET = "k1:envoy-test-secret-0123456789abcdef0123"
ADMIN_TOKEN = "envoy-admin-token-0123456789"


def envoy_section(domain: str, **overrides: Any) -> dict[str, Any]:
    """The ``envoy:`` section of the tests: a few limits of every kind under ``domain``."""
    section: dict[str, Any] = {
        "grpc_port": 0,
        "grpc_host": "127.0.0.1",
        "domains": [
            {
                "domain": domain,
                "descriptors": [
                    {
                        "key": "remote_address",
                        "rate_limit": {"unit": "minute", "requests_per_unit": 5},
                        "name": "per-address",
                    },
                    {
                        "key": "generic_key",
                        "value": "small",
                        "rate_limit": {"unit": "minute", "requests_per_unit": 2},
                        "algorithm": "sliding_window",
                        "name": "small",
                    },
                    {
                        "key": "generic_key",
                        "value": "large",
                        "rate_limit": {"unit": "minute", "requests_per_unit": 10},
                        "algorithm": "token_bucket",
                        "name": "large",
                    },
                    {
                        "key": "generic_key",
                        "value": "shadow",
                        "rate_limit": {"unit": "minute", "requests_per_unit": 1},
                        "shadow_mode": True,
                        "name": "shadowed",
                    },
                    {"key": "generic_key", "value": "free", "unlimited": True},
                    {
                        "key": "header_match",
                        "value": "api",
                        "descriptors": [
                            {
                                "key": "api_key",
                                "rate_limit": {"unit": "SECOND", "requests_per_unit": 3},
                                "algorithm": "gcra",
                            }
                        ],
                    },
                ],
            }
        ],
    }
    section.update(overrides)
    return section


def replica_config(domain: str, *, port: int = 8080, **envoy: Any) -> Any:
    return parse_config(
        {
            "listener": {"host": "127.0.0.1", "port": port, "shutdown_grace": 1},
            "trusted_proxies": ["127.0.0.0/8"],
            # (a loaded test machine may stall Redis past the default 20 ms: fail-open)
            "limiter": {"deadline": 0.5},
            "envoy": envoy_section(domain, **envoy),
        },
        "<envoy-test>",
    )


def replica_settings(redis_url: str, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": database_url,
        "auto_migrate": True,
        "admin_token": SecretStr(ADMIN_TOKEN),
        "jwt_secret": SecretStr(JWT_SECRET),
        "log_level": "warning",
    }
    values.update(overrides)
    return Settings(**values)


async def start_replica(redis_url: str, database_url: str, domain: str, **envoy: Any) -> Gateway:
    """A started replica (HTTP on a free port, gRPC on another)."""
    gateway = Gateway(
        replica_settings(redis_url, database_url),
        replica_config(domain, **envoy),
        port=0,
        components=COMPONENTS,
    )
    return await gateway.start()


def grpc_port(gateway: Gateway) -> int:
    envoy = next(c for c in gateway.runtime.components if c.name == "envoy")
    port = envoy.port  # type: ignore[attr-defined]
    assert isinstance(port, int)
    return port


def descriptor(*entries: tuple[str, str], hits: int | None = None) -> Any:
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    if hits is not None:
        d.hits_addend.value = hits
    return d


def rl_request(domain: str, *descriptors: Any, hits: int = 0) -> Any:
    return rls_pb2.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits)


def rls_stub(port: int) -> tuple[grpc.aio.Channel, Any]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return channel, rls_pb2_grpc.RateLimitServiceStub(channel)
