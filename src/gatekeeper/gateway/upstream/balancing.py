"""Load-balancing strategies: which endpoint of a pool gets the next request.

Every strategy skips endpoints that are unavailable (failed active health checks, ejected by
outlier detection, open circuit breaker) and those in ``exclude`` (already tried by this
request), and returns ``None`` when nothing is left. Picks are O(1) or O(log n) in the common
case; only degraded paths (most endpoints down) scan the pool.

=====================  ==========================================================
``round_robin``        each endpoint in turn
``weighted_round_robin`` nginx's *smooth* weighted round robin (precomputed cycle)
``least_connections``  fewest in-flight requests per unit of weight
``p2c``                two random choices, the less loaded wins (Mitzenmacher)
``adaptive``           two random choices on peak-EWMA latency x load (Finagle)
``ring_hash``          consistent hash ring on ``hash_on`` (ip/header/cookie)
``maglev``             Maglev table on ``hash_on``
=====================  ==========================================================
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Sequence
from functools import reduce
from typing import TYPE_CHECKING, Protocol

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.upstream.context import BalanceContext, RequestContext
from gatekeeper.gateway.upstream.hashing import ConsistentHashBalancer

if TYPE_CHECKING:
    from gatekeeper.gateway.upstream.endpoint import Endpoint

__all__ = [
    "ALIASES",
    "STRATEGIES",
    "AdaptiveBalancer",
    "BalanceContext",
    "Balancer",
    "LeastConnectionsBalancer",
    "RequestContext",
    "RoundRobinBalancer",
    "TwoChoicesBalancer",
    "WeightedRoundRobinBalancer",
    "canonical_strategy",
    "make_balancer",
]

STRATEGIES = (
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "p2c",
    "adaptive",
    "ring_hash",
    "maglev",
)
#: Other names accepted for the strategies (the seeds' and other proxies' spellings).
ALIASES = {
    "weighted": "weighted_round_robin",
    "random_two_choices": "p2c",
    "power_of_two_choices": "p2c",
    "peak_ewma": "adaptive",
    # Seed 004's and NGINX Plus' name: the endpoint answering fastest, in-flight requests
    # counted (peak-EWMA latency times load, as "adaptive" does).
    "least_response_time": "adaptive",
    "least_time": "adaptive",
    "consistent_hash": "ring_hash",
    "ip_hash": "ring_hash",
}
#: Seconds over which peak-EWMA latency decays (Finagle's default).
EWMA_DECAY = 10.0
# A precomputed smooth-WRR cycle never gets longer than this (weights are scaled down).
_MAX_CYCLE = 10_000


class Balancer(Protocol):
    """A strategy bound to one pool's endpoints."""

    name: str

    def pick(
        self, ctx: BalanceContext, now: float, exclude: Collection[Endpoint]
    ) -> Endpoint | None:
        """An available endpoint not in ``exclude``, or ``None``."""
        ...


def canonical_strategy(name: str) -> str:
    """The canonical strategy name for ``name`` or an alias; ConfigurationError if unknown."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in STRATEGIES:
        choices = ", ".join(STRATEGIES)
        raise ConfigurationError(f"unknown balancing strategy {name!r} (one of: {choices})")
    return key


def make_balancer(
    name: str,
    endpoints: Sequence[Endpoint],
    *,
    hash_on: str | None = None,
    rng: random.Random | None = None,
) -> Balancer:
    """Build the strategy ``name`` (or an alias) over ``endpoints``."""
    if not endpoints:
        raise ConfigurationError("a pool needs at least one endpoint")
    key = canonical_strategy(name)
    rng = rng or random.Random()
    if key in ("ring_hash", "maglev"):
        return ConsistentHashBalancer(endpoints, kind=key, hash_on=hash_on, rng=rng)
    factories: dict[str, Callable[[], Balancer]] = {
        "round_robin": lambda: RoundRobinBalancer(endpoints),
        "weighted_round_robin": lambda: WeightedRoundRobinBalancer(endpoints),
        "least_connections": lambda: LeastConnectionsBalancer(endpoints),
        "p2c": lambda: TwoChoicesBalancer(endpoints, rng),
        "adaptive": lambda: AdaptiveBalancer(endpoints, rng),
    }
    return factories[key]()


class RoundRobinBalancer:
    """Each endpoint in turn, ignoring weights."""

    name = "round_robin"

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = list(endpoints)
        self._next = 0

    def pick(
        self, ctx: BalanceContext, now: float, exclude: Collection[Endpoint]
    ) -> Endpoint | None:
        endpoints = self._endpoints
        start = self._next
        ep = endpoints[start]
        # A retry (non-empty exclude) does not take a turn: otherwise, with two endpoints and
        # one failing, every first attempt would land on the failing one.
        if ep.available(now) and ep not in exclude:
            if not exclude:
                self._next = start + 1 if start + 1 < len(endpoints) else 0
            return ep
        count = len(endpoints)
        for k in range(1, count):
            i = (start + k) % count
            ep = endpoints[i]
            if ep.available(now) and ep not in exclude:
                if not exclude:  # see above
                    self._next = (i + 1) % count
                return ep
        return None


class WeightedRoundRobinBalancer:
    """nginx's smooth weighted round robin.

    With every endpoint available the pick follows a cycle computed once with nginx's algorithm
    (weights 5,1,1 give a,a,b,a,c,a,a: spread out, not bunched), so a pick is O(1). When the
    cycle's endpoint is unavailable, the live algorithm runs over the available endpoints
    instead, which is what nginx does with peers that are down.
    """

    name = "weighted_round_robin"

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = list(endpoints)
        weights = [e.weight for e in self._endpoints]
        divisor = reduce(math.gcd, weights)
        weights = [w // divisor for w in weights]
        if sum(weights) > _MAX_CYCLE:
            scale = _MAX_CYCLE / sum(weights)
            weights = [max(1, round(w * scale)) for w in weights]
        self._cycle = self._smooth_cycle(weights)
        self._position = 0
        self._current = [0] * len(self._endpoints)

    def _smooth_cycle(self, weights: list[int]) -> list[Endpoint]:
        current = [0] * len(weights)
        total = sum(weights)
        cycle = []
        for _ in range(total):
            best = 0
            for i, weight in enumerate(weights):
                current[i] += weight
                if current[i] > current[best]:
                    best = i
            current[best] -= total
            cycle.append(self._endpoints[best])
        return cycle

    def pick(
        self, ctx: BalanceContext, now: float, exclude: Collection[Endpoint]
    ) -> Endpoint | None:
        if exclude:
            return self._retry_pick(now, exclude)
        ep = self._cycle[self._position]
        self._position = (self._position + 1) % len(self._cycle)
        if ep.available(now) and ep not in exclude:
            return ep
        return self._live_pick(now, exclude)

    def _retry_pick(self, now: float, exclude: Collection[Endpoint]) -> Endpoint | None:
        # A retry takes the next eligible endpoint of the cycle without using up a turn, so
        # first attempts keep their weighted shares.
        cycle = self._cycle
        length = len(cycle)
        position = self._position
        for k in range(length):
            ep = cycle[(position + k) % length]
            if ep not in exclude and ep.available(now):
                return ep
        return None

    def _live_pick(self, now: float, exclude: Collection[Endpoint]) -> Endpoint | None:
        current = self._current
        best = -1
        total = 0
        for i, ep in enumerate(self._endpoints):
            if not ep.available(now) or ep in exclude:
                continue
            current[i] += ep.weight
            total += ep.weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return self._endpoints[best]


class LeastConnectionsBalancer:
    """Fewest in-flight requests per unit of weight; ties go round robin.

    Exact least-connections must look at every endpoint (O(n), fine for the usual handful);
    ``p2c`` is the O(1) approximation for large pools.
    """

    name = "least_connections"

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = list(endpoints)
        self._start = 0

    def pick(
        self, ctx: BalanceContext, now: float, exclude: Collection[Endpoint]
    ) -> Endpoint | None:
        endpoints = self._endpoints
        count = len(endpoints)
        start = self._start
        self._start = (start + 1) % count
        best: Endpoint | None = None
        best_load = 0.0
        for k in range(count):
            ep = endpoints[(start + k) % count]
            load = ep.in_flight / ep.weight
            if (best is None or load < best_load) and ep.available(now) and ep not in exclude:
                best = ep
                best_load = load
        return best


class TwoChoicesBalancer:
    """Power of two random choices: sample two endpoints, send to the less loaded one."""

    name = "p2c"

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        self._endpoints = list(endpoints)
        self._rng = rng

    def load(self, ep: Endpoint, now: float) -> float:
        """The quantity compared between the two choices."""
        return ep.in_flight / ep.weight

    def pick(
        self, ctx: BalanceContext, now: float, exclude: Collection[Endpoint]
    ) -> Endpoint | None:
        endpoints = self._endpoints
        count = len(endpoints)
        if count == 1:
            ep = endpoints[0]
            return ep if ep.available(now) and ep not in exclude else None
        rand = self._rng.random
        i = int(rand() * count)
        j = int(rand() * (count - 1))
        if j >= i:
            j += 1
        a, b = endpoints[i], endpoints[j]
        a_ok = a.available(now) and a not in exclude
        b_ok = b.available(now) and b not in exclude
        if a_ok and b_ok:
            return a if self.load(a, now) <= self.load(b, now) else b
        if a_ok:
            return a
        if b_ok:
            return b
        # Both samples are out: choose among what is left (the degraded path scans).
        rest = [e for e in endpoints if e.available(now) and e not in exclude]
        if not rest:
            return None
        if len(rest) == 1:
            return rest[0]
        a, b = self._rng.sample(rest, 2)
        return a if self.load(a, now) <= self.load(b, now) else b


class AdaptiveBalancer(TwoChoicesBalancer):
    """P2C on peak-EWMA cost: latency estimate x (in-flight + 1) / weight (Finagle, Linkerd).

    Endpoints that answer slowly or pile up requests lose traffic within a few requests; the
    estimate decays while an endpoint is idle, so it is retried later.
    """

    name = "adaptive"

    def load(self, ep: Endpoint, now: float) -> float:
        return ep.latency(now, EWMA_DECAY) * (ep.in_flight + 1) / ep.weight
