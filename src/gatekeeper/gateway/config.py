"""The declarative gateway configuration (``gatekeeper.yaml``), validated at start-up.

``load_config(path)`` reads YAML, validates it with pydantic and cross-checks names (routes name
existing upstreams and policies). A bad file raises one
:class:`~gatekeeper.errors.ConfigurationError` listing EVERY problem, each as
``<file>: <field.path>: <message>``. The schema is documented in ``docs/gateway.md``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gatekeeper.envoy.config import EnvoyConfig
from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.cache.config import cache_config_problems
from gatekeeper.gateway.flow.cors import DEFAULT_EXPOSED, Cors, cors_policy
from gatekeeper.gateway.geo.config import GeoConfig, RouteGeoConfig, geo_config_problems
from gatekeeper.gateway.upstream.balancing import canonical_strategy
from gatekeeper.gateway.upstream.hashing import parse_hash_on
from gatekeeper.limits.policy import Algorithm, FailureMode, Policy, parse_rate

__all__ = [
    "AbuseConfig",
    "AbusePatternConfig",
    "ConfigFileError",
    "CorsConfig",
    "EndpointConfig",
    "GatewayConfig",
    "LimiterConfig",
    "ListenerConfig",
    "PolicyConfig",
    "RouteConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
]


class ConfigFileError(ConfigurationError):
    """A configuration file is invalid; ``problems`` lists every error found."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or CIDR") from exc
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenerTLSConfig(_Model):
    """HTTPS on the listener: the certificate chain and its key (PEM files)."""

    cert_file: str
    key_file: str

    @model_validator(mode="after")
    def _loadable(self) -> ListenerTLSConfig:
        from gatekeeper.gateway.http.tls import server_context

        server_context(self.cert_file, self.key_file)  # ConfigurationError naming the file
        return self


class ListenerConfig(_Model):
    """Where the gateway listens."""

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    backlog: int = Field(default=2048, ge=1)
    keepalive_timeout: float = Field(default=75.0, ge=0)
    shutdown_grace: float = Field(default=30.0, ge=0)
    tls: ListenerTLSConfig | None = None
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    header_timeout: float = Field(default=30.0, ge=0)


class LimiterConfig(_Model):
    """How the limiter talks to its store: ``deadline`` bounds each (batched) store call;
    past it, each policy's failure mode decides."""

    deadline: float = Field(default=0.020, gt=0, le=10)
    batch_max: int = Field(default=256, ge=1)


class PolicyConfig(_Model):
    """A named limit (see ``gatekeeper.limits.Policy``)."""

    rate: str
    algorithm: Algorithm = Algorithm.TOKEN_BUCKET
    burst: int | None = Field(default=None, ge=1)
    failure: FailureMode = FailureMode.OPEN
    fallback: str | None = None
    shadow: bool = False

    @field_validator("rate", "fallback")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)  # raises ConfigurationError (a ValueError) naming the problem
        return value

    def build(self, name: str) -> Policy:
        """The engine's :class:`Policy` for this entry."""
        return Policy(
            name,
            parse_rate(self.rate),
            algorithm=self.algorithm,
            burst=self.burst,
            failure=self.failure,
            fallback=parse_rate(self.fallback) if self.fallback else None,
            shadow=self.shadow,
        )


class EndpointConfig(_Model):
    """One backend: ``url: http://host:port`` or ``https://host:port`` (or ``host`` +
    ``port`` + ``tls``) and a weight."""

    host: str
    port: int = Field(ge=1, le=65535)
    weight: int = Field(default=1, ge=1, le=1000)
    tls: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"url": data}
        if isinstance(data, dict) and "url" in data:
            data = dict(data)
            url = urlsplit(str(data.pop("url")))
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(
                    "endpoint url must look like http://host:port or https://host:port, "
                    f"got {url.geturl()!r}"
                )
            tls = url.scheme == "https"
            data.setdefault("host", url.hostname)
            data.setdefault("port", url.port or (443 if tls else 80))
            data.setdefault("tls", tls)
        return data


class UpstreamTLSConfig(_Model):
    """How a pool's HTTPS endpoints are verified: against the system's CAs or ``ca_file``,
    for the endpoint's host name or ``server_name`` (also sent as SNI)."""

    verify: bool = True
    ca_file: str | None = None
    server_name: str | None = None

    @model_validator(mode="after")
    def _loadable(self) -> UpstreamTLSConfig:
        from gatekeeper.gateway.http.tls import client_context

        client_context(verify=self.verify, ca_file=self.ca_file)  # names a bad ca_file
        return self


class HealthConfig(_Model):
    """Active health checks: GET ``path`` every ``interval`` seconds."""

    path: str = "/health"
    interval: float = Field(default=5.0, gt=0)
    timeout: float = Field(default=1.0, gt=0)
    healthy_threshold: int = Field(default=2, ge=1)
    unhealthy_threshold: int = Field(default=3, ge=1)


class OutlierConfig(_Model):
    """Passive outlier detection (eject an endpoint after consecutive failures)."""

    consecutive_failures: int = Field(default=5, ge=1)
    base_ejection_time: float = Field(default=30.0, gt=0)
    max_ejection_percent: int = Field(default=50, ge=0, le=100)


class BreakerConfig(_Model):
    """Circuit breaker per endpoint."""

    consecutive_failures: int = Field(default=5, ge=1)
    error_ratio: float = Field(default=0.5, gt=0, le=1)
    min_requests: int = Field(default=20, ge=1)
    window: float = Field(default=10.0, gt=0)
    open_for: float = Field(default=30.0, gt=0)
    half_open_probes: int = Field(default=1, ge=1)


class RetryBudgetConfig(_Model):
    """How many retries a pool may add: ``ratio`` x requests + ``min_per_second``."""

    ratio: float = Field(default=0.2, ge=0, le=1)
    min_per_second: float = Field(default=10.0, ge=0)
    window: float = Field(default=10.0, gt=0)


class QueueConfig(_Model):
    """The admission queue used when the pool is at ``max_concurrency``."""

    size: int = Field(default=100, ge=0)
    timeout: float = Field(default=5.0, gt=0)


class UpstreamConfig(_Model):
    """A pool of endpoints and how to balance and protect them."""

    endpoints: list[EndpointConfig] = Field(min_length=1)
    strategy: str = "round_robin"
    hash_on: str | None = None  # consistent hashing: "ip", "header:<name>", "cookie:<name>"
    health: HealthConfig | None = None
    outlier: OutlierConfig = Field(default_factory=OutlierConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    retry_budget: RetryBudgetConfig = Field(default_factory=RetryBudgetConfig)
    max_concurrency: int | None = Field(default=None, ge=1)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    max_idle_connections: int = Field(default=128, ge=0)
    idle_timeout: float = Field(default=60.0, gt=0)
    tls: UpstreamTLSConfig = Field(default_factory=UpstreamTLSConfig)

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        canonical_strategy(value)  # ConfigurationError (a ValueError) naming the choices
        return value

    @field_validator("hash_on")
    @classmethod
    def _hash_on(cls, value: str | None) -> str | None:
        if value is not None:
            parse_hash_on(value)
        return value


_KEY_PARTS = ("ip", "api_key", "global", "path", "method", "route")


class LimitRef(_Model):
    """A policy applied on a route, keyed by ``ip``, ``api_key``, ``global``, ``path``,
    ``method``, ``route``, ``header:<name>``, ``query:<name>`` or ``segment:<n>`` (the n-th
    path segment), or by several joined with ``+`` (``ip+path``: one bucket per client and
    endpoint)."""

    policy: str
    key: str = "ip"

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"policy": data} if isinstance(data, str) else data

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return "+".join(_key_part(part.strip()) for part in value.split("+"))


def _key_part(value: str) -> str:
    if value in _KEY_PARTS:
        return value
    kind, _, name = value.partition(":")
    if kind in ("header", "query") and name:
        return f"{kind}:{name.lower() if kind == 'header' else name}"
    if kind == "segment" and name.isdigit() and int(name) >= 1:
        return value
    raise ValueError(
        f"key part {value!r}: use ip, api_key, global, path, method, route, header:<name>, "
        "query:<name> or segment:<n>, joined with + for a composite key"
    )


class CorsConfig(_Model):
    """Cross-origin requests (see ``gateway/flow/cors.py``): origins exact, ``*``,
    ``https://*.example.com`` or ``regex:<pattern>``."""

    allow_origins: list[str] = ["*"]
    allow_methods: list[str] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    allow_headers: list[str] = ["*"]
    expose_headers: list[str] | None = None  # None: the RateLimit fields, Retry-After, request id
    allow_credentials: bool = False
    max_age: int = Field(default=600, ge=0, le=86400)

    @model_validator(mode="after")
    def _compiles(self) -> CorsConfig:
        self.build()
        return self

    def build(self) -> Cors:
        """The compiled policy (ConfigurationError names a bad origin)."""
        return cors_policy(
            allow_origins=self.allow_origins,
            allow_methods=self.allow_methods,
            allow_headers=self.allow_headers,
            expose_headers=DEFAULT_EXPOSED if self.expose_headers is None else self.expose_headers,
            allow_credentials=self.allow_credentials,
            max_age=self.max_age,
        )


class HeaderRulesConfig(_Model):
    """Header fields a route sets (replacing any of the same name) or removes."""

    set: dict[str, str] = {}
    remove: list[str] = []


class CompressConfig(_Model):
    """gzip for clients that accept it (see ``gateway/flow/compression.py``)."""

    min_bytes: int = Field(default=1024, ge=0)
    level: int = Field(default=6, ge=1, le=9)
    types: list[str] = []  # media type prefixes; empty: text, JSON, XML, JavaScript, SVG


class TimeoutsConfig(_Model):
    """Seconds to connect, between reads, and for the whole exchange."""

    connect: float = Field(default=5.0, gt=0)
    read: float = Field(default=30.0, gt=0)
    total: float = Field(default=60.0, gt=0)


class RetryConfig(_Model):
    """Retries of idempotent requests on another endpoint."""

    attempts: int = Field(default=2, ge=1, le=10)
    on_status: list[int] = [502, 503, 504]
    on_connect_error: bool = True
    on_timeout: bool = False


class RouteConfig(_Model):
    """Which requests go where, under which limits."""

    name: str | None = None
    path_prefix: str = "/"
    host: str | None = None
    methods: list[str] | None = None
    # The pool; a geo route has none (its datacenter's is chosen per request: ``geo``).
    upstream: str | None = None
    limits: list[LimitRef] = []
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    cache: dict[str, Any] | bool | None = None
    priority: int = 0
    strip_prefix: bool = False
    preserve_host: bool = True
    # Which rate-limit fields answers carry: the IETF RateLimit/RateLimit-Policy, the legacy
    # X-RateLimit-* trio, both or none (Retry-After on every 429 whatever the choice).
    ratelimit_headers: Literal["ietf", "legacy", "both", "none"] = "ietf"
    max_body_bytes: int | None = Field(default=None, ge=0)
    request_headers: HeaderRulesConfig | None = None
    response_headers: HeaderRulesConfig | None = None
    compress: bool | CompressConfig = False
    # A business_id: visitors without a ready token wait on the hosted page (/queue/wait).
    waiting_room: str | None = None
    # Who may call the route: the identity guard checks credentials and the principal's tier.
    auth: Literal["none", "api_key", "jwt", "any"] = "none"
    # Only principals of these tiers pass (403 naming them; no credentials: 401). Implies
    # auth "any" when auth is "none".
    tiers: list[str] | None = Field(default=None, min_length=1)
    cors: CorsConfig | bool = False
    # X-Response-Time and Server-Timing on the answers.
    timing: bool = False
    # Route by the client's location to the nearest datacenter (gateway/geo/config.py).
    geo: RouteGeoConfig | bool = False

    @field_validator("ratelimit_headers", mode="before")
    @classmethod
    def _ratelimit_headers(cls, value: Any) -> Any:
        if value is True:
            return "ietf"
        if value is False:
            return "none"
        return value

    @field_validator("request_headers", "response_headers")
    @classmethod
    def _header_rules(
        cls, value: HeaderRulesConfig | None, info: ValidationInfo
    ) -> HeaderRulesConfig | None:
        if value is not None:
            from gatekeeper.gateway.flow.header_rules import header_rules

            request = info.field_name == "request_headers"
            header_rules("header rules", value.set, value.remove, request=request)
        return value

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        upper = [m.upper() for m in value]
        for method in upper:
            if not method.isalpha():
                raise ValueError(f"{method!r} is not an HTTP method")
        return upper


class AbusePatternConfig(_Model):
    """One abuse pattern: flagged once ``threshold`` is reached within ``window`` seconds.
    ``ban`` overrides the section's ``ban`` for this pattern."""

    enabled: bool = True
    threshold: int = Field(ge=1, le=100_000)
    window: float = Field(gt=0, le=86_400)
    ban: bool | None = None


def _pattern(threshold: int, window: float) -> Any:
    return Field(default_factory=lambda: AbusePatternConfig(threshold=threshold, window=window))


class AbuseConfig(_Model):
    """Abuse detection (``docs/abuse.md``): on and observe-only by default; ``ban: true`` bans
    flagged addresses and keys with the identity's progressive bans."""

    enabled: bool = True
    ban: bool = False
    # Flagged clients are listed for this long after their last finding, at most max_flagged.
    flag_ttl: float = Field(default=3600.0, gt=0, le=30 * 86_400)
    max_flagged: int = Field(default=1000, ge=1, le=100_000)
    # Never flagged: addresses in these networks, these API key ids.
    allow_networks: list[IPvAnyNetwork] = []
    allow_keys: list[Annotated[str, Field(min_length=1, max_length=64)]] = []
    # Observations waiting for the background evaluation (beyond: dropped and counted).
    queue_max: int = Field(default=10_000, ge=1, le=1_000_000)
    credential_stuffing_ip: AbusePatternConfig = _pattern(20, 300)
    credential_stuffing_account: AbusePatternConfig = _pattern(10, 300)
    scanning: AbusePatternConfig = _pattern(30, 60)
    retry_after_ignored: AbusePatternConfig = _pattern(60, 60)
    keys_per_ip: AbusePatternConfig = _pattern(10, 300)
    networks_per_key: AbusePatternConfig = _pattern(10, 300)


class GatewayConfig(_Model):
    """The whole file."""

    listener: ListenerConfig = Field(default_factory=ListenerConfig)
    trusted_proxies: list[Annotated[str, AfterValidator(_cidr)]] = []
    # Clients that may read the operational endpoints (/dashboard*, /stats, /api/metrics,
    # /metrics) without the admin token: loopback unless configured (e.g. a Prometheus
    # network). Everyone else needs Authorization: Bearer <GATEKEEPER_ADMIN_TOKEN>.
    operator_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        ]
    )
    limiter: LimiterConfig = Field(default_factory=LimiterConfig)
    policies: dict[str, PolicyConfig] = {}
    upstreams: dict[str, UpstreamConfig] = {}
    routes: list[RouteConfig] = []
    cache: dict[str, Any] = {}
    admin: dict[str, Any] = {}
    log_access: bool = True
    # CORS for the built-in endpoints (routes have their own ``cors``).
    cors: CorsConfig | bool = False
    geo: GeoConfig | None = None
    abuse: AbuseConfig = Field(default_factory=AbuseConfig)
    # Gatekeeper as Envoy's rate limit and authorization service (docs/envoy.md).
    envoy: EnvoyConfig = Field(default_factory=EnvoyConfig)

    @model_validator(mode="after")
    def _envoy_limits(self) -> GatewayConfig:
        from gatekeeper.envoy.descriptors import compile_limits

        compile_limits(self.envoy)  # ConfigurationError (a ValueError): two limits of one name
        return self


def _cross_check(data: Any) -> list[str]:
    """Name references that pydantic cannot see: routes -> upstreams and policies."""
    if not isinstance(data, dict):
        return []
    errors: list[str] = []
    upstreams = data.get("upstreams") or {}
    policies = data.get("policies") or {}
    routes = data.get("routes") or []
    if not isinstance(routes, list):
        return errors
    names: set[str] = set()
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        upstream = route.get("upstream")
        if isinstance(upstream, str) and isinstance(upstreams, dict) and upstream not in upstreams:
            known = ", ".join(sorted(upstreams)) or "none defined"
            errors.append(f"routes.{i}.upstream: unknown upstream {upstream!r} (known: {known})")
        name = route.get("name")
        if isinstance(name, str):
            if name in names:
                errors.append(f"routes.{i}.name: duplicate route name {name!r}")
            names.add(name)
        for j, limit in enumerate(route.get("limits") or []):
            policy = limit if isinstance(limit, str) else (limit or {}).get("policy")
            if isinstance(policy, str) and isinstance(policies, dict) and policy not in policies:
                known = ", ".join(sorted(policies)) or "none defined"
                errors.append(
                    f"routes.{i}.limits.{j}.policy: unknown policy {policy!r} (known: {known})"
                )
    return errors


def parse_config(data: Any, source: str = "<config>") -> GatewayConfig:
    """Validate already-parsed YAML; raises ConfigurationError listing every problem."""
    if data is None:
        data = {}
    problems: list[str] = []
    config: GatewayConfig | None = None
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            path = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {message}")
    problems += _cross_check(data)
    problems += cache_config_problems(data)
    problems += geo_config_problems(data)
    if problems or config is None:
        lines = "\n".join(f"  {source}: {p}" for p in problems)
        raise ConfigFileError(
            f"{source}: {len(problems)} configuration error(s):\n{lines}",
            [f"{source}: {p}" for p in problems],
        )
    return config


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML file (see :func:`parse_config`)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problem = f"{source}: cannot read: {exc.strerror or exc}"
        raise ConfigFileError(problem, [problem]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = f"{source}: invalid YAML: {exc}"
        raise ConfigFileError(problem, [problem]) from exc
    return parse_config(data, source)
