"""The ``cache:`` sections of the gateway's YAML file, validated, and the cache built from them.

Top level (every field optional)::

    cache:
      store: memory            # or redis: the replica's GATEKEEPER_REDIS_URL, shared by replicas
      name: gatekeeper         # the name in Cache-Status
      max_object_bytes: 1048576
      max_total_bytes: 67108864  # memory store only
      max_entries: 10000         # memory store only
      redis_prefix: "gk:cache"
      near_ttl: 1                # redis store: seconds a replica keeps its own copy (0: off)
      coalesce: true
      coalesce_timeout: 5
      validator_grace: 300
      honor_request_directives: true

Per route: ``cache: true`` (cache this route), ``cache: false`` / absent (do not), or a mapping
``{namespace: "...", default_ttl: 30}``: ``namespace`` shares entries between routes that serve
the same URIs; ``default_ttl`` (seconds) is the lifetime of answers that give no freshness of
their own (no ``max-age``, ``s-maxage`` or ``Expires``), as nginx's ``proxy_cache_valid``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.cache.cache import HttpCache
from gatekeeper.gateway.cache.memory import MemoryStore
from gatekeeper.gateway.cache.options import CacheOptions
from gatekeeper.gateway.cache.redis import RedisStore
from gatekeeper.gateway.cache.store import Store
from gatekeeper.gateway.cache.tiered import TieredStore

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gatekeeper.types import Clock

__all__ = [
    "CacheConfig",
    "RouteCache",
    "build_cache",
    "cache_config_problems",
    "parse_cache_config",
    "route_cache",
]


class CacheConfig(BaseModel):
    """The top-level ``cache:`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Literal["memory", "redis"] = "memory"
    name: str = Field("gatekeeper", pattern=r"^[A-Za-z][A-Za-z0-9_.:-]*$")
    max_object_bytes: int = Field(1 * 2**20, gt=0)
    max_total_bytes: int = Field(64 * 2**20, gt=0)
    max_entries: int = Field(10_000, gt=0)
    redis_prefix: str = Field("gk:cache", min_length=1)
    near_ttl: float = Field(1.0, ge=0, le=60)
    coalesce: bool = True
    coalesce_timeout: float = Field(5.0, gt=0)
    validator_grace: float = Field(300.0, ge=0)
    honor_request_directives: bool = True
    max_background_refreshes: int = Field(64, ge=0)

    def options(self) -> CacheOptions:
        """The behaviour settings as the cache takes them."""
        return CacheOptions(
            name=self.name,
            max_object_bytes=self.max_object_bytes,
            coalesce=self.coalesce,
            coalesce_timeout=self.coalesce_timeout,
            validator_grace=self.validator_grace,
            honor_request_directives=self.honor_request_directives,
            max_background_refreshes=self.max_background_refreshes,
        )


def parse_cache_config(data: dict[str, Any] | None, where: str = "cache") -> CacheConfig:
    """Validate a ``cache:`` mapping; every problem is listed, each with its field path."""
    try:
        return CacheConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = [
            f"{where}.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigurationError("; ".join(problems)) from exc


def cache_config_problems(data: Any) -> list[str]:
    """Every problem of the cache settings in a whole configuration mapping, one line each
    (``cache.max_object_bytes: ...``, ``routes.2.cache: ...``), for the file's error list."""
    if not isinstance(data, dict):
        return []
    problems: list[str] = []
    section = data.get("cache")
    if isinstance(section, dict):
        try:
            CacheConfig.model_validate(section)
        except ValidationError as exc:
            for error in exc.errors():
                path = ".".join(str(p) for p in error["loc"])
                problems.append(f"cache.{path}: {error['msg']}")
    routes = data.get("routes")
    for i, route in enumerate(routes if isinstance(routes, list) else []):
        value = route.get("cache") if isinstance(route, dict) else None
        if isinstance(value, dict):
            try:
                route_cache(value, str(i))
            except ConfigurationError as exc:
                # "routes[i].cache.default_ttl: ..." -> "routes.i.cache.default_ttl: ..."
                problems.append(f"routes.{i}.cache{str(exc).partition('].cache')[2]}")
    return problems


@dataclass(frozen=True, slots=True)
class RouteCache:
    """A route's cache policy: entries of routes with the same namespace are shared; answers
    without freshness of their own are fresh for ``default_ttl`` seconds (None: none)."""

    namespace: str
    default_ttl: float | None = None


def route_cache(value: dict[str, Any] | bool | None, route_name: str) -> RouteCache | None:
    """The policy for a route's ``cache:`` value (``None``: the route is not cached)."""
    if not value:  # None, false and {} all mean "not cached", as for the pipeline
        return None
    if value is True:
        return RouteCache(namespace=route_name)
    # Only ``namespace``: the pipeline caches every route whose value is truthy, so a mapping
    # must never mean "off" (use ``cache: false``).
    unknown = set(value) - {"namespace", "default_ttl"}
    if unknown:
        raise ConfigurationError(
            f"routes[{route_name}].cache: unknown field(s) {', '.join(sorted(unknown))}"
            " (allowed: namespace, default_ttl; use cache: false to turn caching off)"
        )
    namespace = value.get("namespace", route_name)
    if not isinstance(namespace, str) or not namespace:
        raise ConfigurationError(f"routes[{route_name}].cache.namespace: must be a string")
    ttl = value.get("default_ttl")
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 31_536_000
    ):
        raise ConfigurationError(
            f"routes[{route_name}].cache.default_ttl: must be seconds between 0 and a year"
        )
    return RouteCache(namespace=namespace, default_ttl=None if ttl is None else float(ttl))


def build_cache(config: CacheConfig, *, clock: Clock, redis: Redis | None = None) -> HttpCache:
    """The cache for a replica. ``store: redis`` needs the replica's Redis client."""
    memory = MemoryStore(
        clock=clock,
        # an entry is its body plus its header fields: leave room for the latter
        max_entry_bytes=config.max_object_bytes + 64 * 1024,
        max_total_bytes=config.max_total_bytes,
        max_entries=config.max_entries,
    )
    store: Store = memory
    if config.store == "redis":
        if redis is None:
            raise ConfigurationError("cache.store: 'redis' needs GATEKEEPER_REDIS_URL to be set")
        shared = RedisStore(
            redis, prefix=config.redis_prefix, max_entry_bytes=config.max_object_bytes + 64 * 1024
        )
        store = TieredStore(memory, shared, near_ttl=config.near_ttl) if config.near_ttl else shared
    return HttpCache(store, options=config.options(), clock=clock)
