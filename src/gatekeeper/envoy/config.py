"""The ``envoy:`` section of ``gatekeeper.yaml``: Envoy's rate limit service and ext_authz.

The descriptors have the shape envoyproxy/ratelimit users know, plus Gatekeeper's own choices
(``algorithm``, ``burst``, ``failure``, ``name``)::

    envoy:
      grpc_port: 8081            # off unless set (GATEKEEPER_GRPC_PORT overrides it)
      domains:
        - domain: edge
          descriptors:
            - key: remote_address              # one counter per client address
              rate_limit: {unit: second, requests_per_unit: 50}
              algorithm: sliding_window        # default fixed_window, as envoyproxy/ratelimit
            - key: header_match
              value: api
              descriptors:
                - key: api_key
                  rate_limit: {unit: minute, requests_per_unit: 600}
                  shadow_mode: true

A leaf with ``rate_limit`` (or ``unlimited: true``) is a limit; a descriptor without ``value``
matches every value of its key, each value counted apart. How a request's descriptors are
matched against this tree and decided is :mod:`gatekeeper.envoy.descriptors`' and
:mod:`gatekeeper.envoy.rls`'.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gatekeeper.limits.policy import Algorithm, FailureMode

__all__ = [
    "UNIT_SECONDS",
    "DescriptorConfig",
    "DomainConfig",
    "EnvoyConfig",
    "RateLimitConfig",
]

# envoyproxy/ratelimit's units (months and years as 30 and 365 days, as it counts them).
UNIT_SECONDS: dict[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 30 * 86400,
    "year": 365 * 86400,
}
Unit = Literal["second", "minute", "hour", "day", "week", "month", "year"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitConfig(_Model):
    """``requests_per_unit`` per ``unit`` (envoyproxy/ratelimit's ``rate_limit``)."""

    unit: Unit
    requests_per_unit: int = Field(ge=1)

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: object) -> object:
        # envoyproxy/ratelimit files write units in upper case (SECOND) as often as lower.
        if isinstance(data, dict) and isinstance(data.get("unit"), str):
            return {**data, "unit": data["unit"].lower()}
        return data


class DescriptorConfig(_Model):
    """One node of a domain's descriptor tree."""

    key: str = Field(min_length=1)
    value: str | None = None
    rate_limit: RateLimitConfig | None = None
    unlimited: bool = False
    # Gatekeeper's own: the counting scheme (any but concurrency: Envoy never says when a
    # request ends, so a lease could not be given back), bucket size, failure mode.
    algorithm: Algorithm = Algorithm.FIXED_WINDOW
    burst: int | None = Field(default=None, ge=1)
    failure: FailureMode = FailureMode.OPEN
    shadow_mode: bool = False
    # The policy's name in RateLimit / RateLimit-Policy (default: derived from the path).
    name: str | None = Field(default=None, min_length=1, max_length=128)
    descriptors: list[DescriptorConfig] = []

    @model_validator(mode="after")
    def _consistent(self) -> DescriptorConfig:
        if self.algorithm is Algorithm.CONCURRENCY:
            raise ValueError(
                "algorithm concurrency is not available to Envoy: its rate limit protocol never "
                "says when a request ends, so a lease could not be given back (use the gateway's "
                "concurrency limits, or a rate)"
            )
        if self.unlimited and self.rate_limit is not None:
            raise ValueError("a descriptor is either unlimited or has a rate_limit, not both")
        if self.burst is not None and self.algorithm not in (
            Algorithm.TOKEN_BUCKET,
            Algorithm.GCRA,
        ):
            raise ValueError("burst applies to token_bucket and gcra only")
        if self.name is not None and any(c in self.name for c in "{}"):
            raise ValueError("name may not contain braces")
        names = [(d.key, d.value) for d in self.descriptors]
        if len(set(names)) < len(names):
            raise ValueError(f"descriptor {self.key!r} lists the same key and value twice")
        return self


class DomainConfig(_Model):
    """A domain (Envoy's ``domain`` in the rate limit filter) and its descriptors."""

    domain: str = Field(min_length=1)
    descriptors: list[DescriptorConfig] = []

    @model_validator(mode="after")
    def _unique(self) -> DomainConfig:
        names = [(d.key, d.value) for d in self.descriptors]
        if len(set(names)) < len(names):
            raise ValueError(f"domain {self.domain!r} lists the same key and value twice")
        return self


class EnvoyConfig(_Model):
    """Gatekeeper as Envoy's rate limit service and external authorization service."""

    # The gRPC listener; off unless a port is set here or in GATEKEEPER_GRPC_PORT.
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    grpc_host: str | None = None  # default: the HTTP listener's host
    # The gRPC server: Gatekeeper's own HTTP/2 server for unary calls (native), or grpcio's
    # asyncio server (about 450 us of CPU per call more; see docs/envoy.md).
    server: Literal["native", "grpcio"] = "native"
    domains: list[DomainConfig] = []
    # Every descriptor in shadow mode (envoyproxy/ratelimit's SHADOW_MODE): decided, counted,
    # reported, never enforced.
    shadow_mode: bool = False
    # What ext_authz requires: an X-API-Key, a Bearer JWT, either ("any"), or nothing
    # ("optional": anonymous callers get the anonymous per-IP limit).
    auth: Literal["any", "api_key", "jwt", "optional"] = "any"

    @model_validator(mode="after")
    def _unique(self) -> EnvoyConfig:
        names = [d.domain for d in self.domains]
        if len(set(names)) < len(names):
            raise ValueError("a domain is listed twice")
        return self
