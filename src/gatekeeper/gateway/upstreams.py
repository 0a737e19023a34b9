"""Building upstream pools from configuration.

The balancing, health, breaker, retry-budget and admission logic belongs to
``gatekeeper.gateway.pool.UpstreamPool`` (the resilience part of the gateway). When that module is
not importable, :class:`RoundRobinPool` stands in behind the same method names so that the proxy
always talks to one shape: ``pick``/``on_start``/``on_finish``/``admission``/``retry_budget``/
``set_strategy``/``snapshot``/``start``/``stop``.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import ConfigurationError, NoHealthyUpstream

if TYPE_CHECKING:
    from gatekeeper.gateway.config import UpstreamConfig

__all__ = ["RoundRobinPool", "SimpleEndpoint", "build_pool"]


class SimpleEndpoint:
    """An upstream address (host, port, weight) with an in-flight counter."""

    __slots__ = ("host", "in_flight", "port", "weight")

    def __init__(self, host: str, port: int, weight: int = 1) -> None:
        self.host = host
        self.port = port
        self.weight = weight
        self.in_flight = 0

    def __repr__(self) -> str:
        return f"{self.host}:{self.port}"


class _NoBudget:
    def allow_retry(self) -> bool:
        return True


class RoundRobinPool:
    """Plain round robin over every endpoint (no health, no breaker): the fallback pool."""

    strategies = ("round_robin",)

    def __init__(self, name: str, endpoints: Sequence[SimpleEndpoint]) -> None:
        if not endpoints:
            raise ConfigurationError(f"upstream {name!r} needs at least one endpoint")
        self.name = name
        self.endpoints = list(endpoints)
        self.strategy = "round_robin"
        self.retry_budget = _NoBudget()
        self._cycle = itertools.cycle(self.endpoints)

    def pick(self, ctx: Any, exclude: frozenset[Any] = frozenset()) -> SimpleEndpoint:
        for _ in range(len(self.endpoints)):
            endpoint = next(self._cycle)
            if endpoint not in exclude:
                return endpoint
        raise NoHealthyUpstream(f"upstream {self.name!r}: every endpoint was tried")

    def on_start(self, endpoint: SimpleEndpoint) -> None:
        endpoint.in_flight += 1

    def on_finish(
        self, endpoint: SimpleEndpoint, status: int | None, error: bool, latency: float
    ) -> None:
        endpoint.in_flight -= 1

    @contextlib.asynccontextmanager
    async def admission(self, priority: int = 0) -> AsyncIterator[None]:
        yield

    def set_strategy(self, strategy: str) -> None:
        if strategy not in self.strategies:
            raise ConfigurationError(f"unknown strategy {strategy!r} (one of round_robin)")

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "strategy": self.strategy,
            "endpoints": [
                {"address": repr(e), "weight": e.weight, "in_flight": e.in_flight, "healthy": True}
                for e in self.endpoints
            ],
        }

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def build_pool(name: str, config: UpstreamConfig, *, clock: Any = None, metrics: Any = None) -> Any:
    """The pool for one ``upstreams:`` entry (the resilience pool when available), reporting
    breaker, health, ejection and queue events to ``metrics`` when given."""
    try:
        pool_module = importlib.import_module("gatekeeper.gateway.pool")
    except ImportError:
        pool_module = None
    factory = getattr(pool_module, "pool_from_config", None)
    if factory is None:
        endpoints = [SimpleEndpoint(e.host, e.port, e.weight) for e in config.endpoints]
        return RoundRobinPool(name, endpoints)
    return factory(name, config, clock=clock, metrics=metrics)
