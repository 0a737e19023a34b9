"""Building upstream pools from configuration.

The balancing, health, breaker, retry-budget and admission logic belongs to
:class:`gatekeeper.gateway.upstream.pool.UpstreamPool`; this is the composition root's entry point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gatekeeper.gateway.upstream.pool import UpstreamPool, pool_from_config

if TYPE_CHECKING:
    from gatekeeper.gateway.config import UpstreamConfig

__all__ = ["build_pool"]


def build_pool(
    name: str, config: UpstreamConfig, *, clock: Any = None, metrics: Any = None, events: Any = None
) -> UpstreamPool:
    """The pool for one ``upstreams:`` entry, reporting breaker, health, ejection and queue
    events to ``metrics`` when given, and endpoint up/down and breaker opened/closed to
    ``events`` (a ``gatekeeper.types.EventEmitter``)."""
    pool = pool_from_config(name, config, clock=clock, metrics=metrics)
    pool.events = events
    return pool
