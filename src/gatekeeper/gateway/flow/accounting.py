"""What every answered request leaves behind: its metrics, its access line, and an observation
for abuse detection (which only queues: it is evaluated in the background).

The requests answered in one event-loop turn are accounted together at its end: one pass over
the metrics and the access log for all of them costs about half as much CPU as the same work
interleaved with the serving of each (measured with ``make bench``), and the turn ends before
anything else can read the metrics. Observability never fails serving: an exception while
accounting is reported and dropped.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gatekeeper.observability.proxied import log_builtin, log_proxied
from gatekeeper.observability.unexpected import report_unexpected

if TYPE_CHECKING:
    from gatekeeper.gateway.flow.exchange import Exchange
    from gatekeeper.limits.decision import Decision

__all__ = ["Accounting"]


class Accounting:
    """Counts answered requests in ``metrics``, writes their lines to ``access_log``, reports
    each 429 to ``spikes`` (``events.spikes.SpikeDetector``: ``limited(route, key)``) and shows
    them to ``abuse`` (a ``gatekeeper.abuse.Detector``); any may be None."""

    def __init__(
        self, metrics: Any = None, access_log: Any = None, spikes: Any = None, abuse: Any = None
    ) -> None:
        self.metrics = metrics
        self.access_log = access_log
        self.spikes = spikes
        self.abuse = abuse
        self._answered: list[tuple[Exchange, int, float]] = []

    def answered(self, loop: asyncio.AbstractEventLoop, exchange: Exchange, status: int) -> None:
        """Account ``exchange`` (answered with ``status``; 0: never answered) at the end of
        this loop turn."""
        answered = self._answered
        answered.append((exchange, status or 499, loop.time() - exchange.started))
        if len(answered) == 1:
            loop.call_soon(self._flush)

    def decided(self, decision: Decision) -> None:
        """Count the limiter's verdict per policy."""
        metrics = self.metrics
        if metrics is None:
            return
        for result in decision.results:
            if result.allowed:
                outcome = "allowed"
            elif result.shadow:
                outcome = "shadow_limited"
            else:
                outcome = "limited"
            metrics.decision(result.policy, outcome)

    def _flush(self) -> None:
        answered, self._answered = self._answered, []
        metrics = self.metrics
        access = self.access_log
        abuse = self.abuse
        # (The in-flight gauge is not kept per request: it costs two locked updates on the hot
        # path; /stats reports in-flight connections from the server instead.)
        try:
            spikes = self.spikes
            if spikes is not None:
                for exchange, status, _ in answered:
                    if status == 429:
                        route = exchange.route
                        spikes.limited(route.name if route else None, exchange.limited_subject())
            if metrics is not None:
                count = metrics.request
                for exchange, status, elapsed in answered:
                    route = exchange.route
                    if route is not None:
                        # (A geo route's pool is the one its request was sent to.)
                        upstream = exchange.request.upstream or route.upstream
                        count(route.name, status, upstream, elapsed)
            if access is not None:
                for exchange, status, elapsed in answered:
                    route = exchange.route
                    request = exchange.request
                    if route is None:
                        log_builtin(access, request, exchange.rid, status, elapsed)
                    else:
                        log_proxied(
                            access,
                            request,
                            route,
                            status,
                            elapsed,
                            request_id=exchange.rid,
                            term=exchange.term,
                            decision=exchange.decision,
                            limit_key=exchange.limited_subject(),
                        )
            if abuse is not None:
                observe = abuse.answered
                for exchange, status, _ in answered:
                    request = exchange.request
                    principal = exchange.principal
                    key_id = principal.key_id if principal is not None else None
                    observe(request.client_ip, request.path, status, key_id)
        except Exception as exc:  # observability must never fail serving
            report_unexpected(exc, where=f"accounting {len(answered)} answered requests")
