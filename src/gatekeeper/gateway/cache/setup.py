"""Wiring the cache into a replica: build it from the gateway's configuration.

The composition root calls :func:`gateway_cache` when it builds a ``Snapshot``::

    state.cache = gateway_cache(runtime, config)   # None when no route enables caching

On a reload the previous cache is reused when the ``cache:`` section did not change, so a reload
does not empty the cache.
"""

from __future__ import annotations

from typing import Any

from gatekeeper.gateway.cache.adapter import GatewayCache
from gatekeeper.gateway.cache.config import build_cache, parse_cache_config, route_cache

__all__ = ["gateway_cache"]


def gateway_cache(runtime: Any, config: Any, previous: Any = None) -> GatewayCache | None:
    """The replica's cache for ``config`` (a ``GatewayConfig``), or ``None`` if unused.

    ``runtime`` is the ``gatekeeper.app.Runtime`` (its ``clock``, ``redis`` and ``metrics`` are
    used); ``previous`` is the cache of the state being replaced, if any. Raises
    :class:`~gatekeeper.errors.ConfigurationError` naming the field of a bad ``cache:`` value.
    """
    routes = list(getattr(config, "routes", []))
    enabled = [
        route_cache(rc.cache, rc.name or f"route-{i}") is not None for i, rc in enumerate(routes)
    ]
    settings = parse_cache_config(getattr(config, "cache", None) or {})
    if not any(enabled):
        return None
    if previous is None and runtime is not None and getattr(runtime, "state", None) is not None:
        previous = getattr(runtime.snapshot, "cache", None)
    if isinstance(previous, GatewayCache) and previous.config == settings:
        return previous
    cache = build_cache(settings, clock=runtime.clock, redis=getattr(runtime, "redis", None))
    return GatewayCache(cache, metrics=getattr(runtime, "metrics", None), config=settings)
