"""Sliding counters on the limiter's store: "how many in the last ``window`` seconds".

A counter is a sliding-log policy of ``threshold`` per ``window`` decided by a
:class:`~gatekeeper.limits.Limiter` on the gateway's own limit store, under the subject
``abuse:<subject>`` (store key ``gk:{abuse:<subject>}:abuse-<pattern>``, one Cluster slot per
subject). The sliding log is exact across replicas: the ``threshold``-th observation within any
window is the one that leaves nothing remaining, and it happens once. Past the threshold the
limiter refuses (nothing more is stored) and its over-limit cache answers locally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gatekeeper.abuse.patterns import Rule
from gatekeeper.abuse.timing import store_now_us
from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.policy import Algorithm, Policy, Rate
from gatekeeper.types import Clock

__all__ = ["SlidingCounters"]


class SlidingCounters:
    """Counts observations per (rule, subject) on ``limiter``'s store."""

    def __init__(self, limiter: Limiter, clock: Clock) -> None:
        self.limiter = limiter
        self.clock = clock
        self._policies: dict[Rule, Policy] = {}

    def policy(self, rule: Rule) -> Policy:
        policy = self._policies.get(rule)
        if policy is None:
            policy = Policy(
                f"abuse-{rule.pattern}",
                Rate(rule.threshold, rule.window),
                algorithm=Algorithm.SLIDING_LOG,
            )
            self._policies[rule] = policy
        return policy

    async def count(self, hits: Sequence[tuple[Rule, str]]) -> list[int | None]:
        """Count one observation of each ``(rule, subject)``: how many lie in the window now
        (at most the threshold; ``None`` when the store could not say). The limiter batches
        them into one store call."""
        now_us = store_now_us(self.clock)
        decisions = await asyncio.gather(
            *(
                self.limiter.hit(self.policy(rule), f"abuse:{subject}", now_us=now_us)
                for rule, subject in hits
            )
        )
        counts: list[int | None] = []
        for decision in decisions:
            if decision.degraded or not decision.results:
                counts.append(None)
                continue
            result = decision.results[0]
            counts.append(result.limit - result.remaining if result.allowed else result.limit)
        return counts
