"""Every Prometheus metric Gatekeeper exports, defined in one place.

Names are stable (they are an API: dashboards and alerts depend on them), carry the
``gatekeeper_`` prefix and their unit, and every label is bounded: a route is the route's *name*
from the configuration, never the raw path; an upstream is a pool name; an endpoint is a
configured ``host:port``; a tenant is a configured business id; a status is an HTTP code.

Hot paths call the small typed methods of :class:`Metrics` (``metrics.request(...)``,
``metrics.decision(...)``, ...). Each method caches its pre-bound label children in a plain dict,
so a call costs one dict lookup plus the increments, without prometheus-client's label lock.

Metrics are created on the registry passed in; nothing is registered at import time. When several
worker processes serve one port, call :func:`enable_multiprocess` in the parent *before* any
worker creates its :class:`Metrics` (it is prometheus-client's process-wide switch, driven by
``PROMETHEUS_MULTIPROC_DIR``); :meth:`Metrics.render` then aggregates the files of every worker.

=================================================== ========= ==============================
name                                                type      labels
=================================================== ========= ==============================
gatekeeper_http_requests_total                      counter   route, status, upstream
gatekeeper_http_request_duration_seconds            histogram route
gatekeeper_http_requests_in_flight                  gauge     (none)
gatekeeper_upstream_request_duration_seconds        histogram upstream
gatekeeper_upstream_attempts_total                  counter   upstream, endpoint, outcome
gatekeeper_upstream_retries_total                   counter   upstream
gatekeeper_upstream_endpoint_healthy                gauge     upstream, endpoint
gatekeeper_upstream_ejections_total                 counter   upstream, endpoint
gatekeeper_upstream_breaker_state                   gauge     upstream, endpoint
gatekeeper_upstream_breaker_transitions_total       counter   upstream, endpoint, state
gatekeeper_ratelimit_decisions_total                counter   policy, outcome
gatekeeper_ratelimit_degraded_decisions_total       counter   policy, mode
gatekeeper_degraded                                 gauge     part
gatekeeper_ratelimit_store_duration_seconds         histogram store
gatekeeper_admission_queue_depth                    gauge     upstream
gatekeeper_admission_queue_wait_seconds             histogram upstream
gatekeeper_admission_rejections_total               counter   upstream, reason
gatekeeper_cache_lookups_total                      counter   route, result
gatekeeper_waitingroom_queue_length                 gauge     tenant
gatekeeper_waitingroom_admissions_total             counter   tenant
gatekeeper_waitingroom_abandoned_total              counter   tenant
gatekeeper_waitingroom_tokens_issued_total          counter   tenant
gatekeeper_waitingroom_tokens_verified_total        counter   tenant, outcome
gatekeeper_geo_requests_total                       counter   route, datacenter, region
gatekeeper_geo_lookups_total                        counter   result
gatekeeper_geo_failovers_total                      counter   route, datacenter
gatekeeper_geo_refusals_total                       counter   route, reason
gatekeeper_geo_distance_kilometres                  histogram route
=================================================== ========= ==============================

A geo route's labels are configured names (its datacenters, the regions of its clients); a
country is never a label (``/geo/stats`` counts countries).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.registry import Collector

from gatekeeper.errors import ConfigurationError

__all__ = [
    "BREAKER_STATES",
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "LiveSink",
    "Metrics",
    "enable_multiprocess",
    "multiprocess_dir",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# From 1 ms (a cache hit on loopback) to 10 s (a slow upstream's timeout).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Waiting in the admission queue is bounded by its timeout (seconds, not milliseconds).
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Store round trips: a batched EVALSHA on loopback takes ~0.1-2 ms.
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

# Client to datacenter: same city, region, country, continent, ocean away, antipodes.
DISTANCE_BUCKETS = (50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 12000.0, 20000.0)
DISTANCE_BOUNDS = (*DISTANCE_BUCKETS, float("inf"))  # a histogram child's _upper_bounds

# The breaker gauge's value per state, so that "open" is the maximum an alert can watch.
BREAKER_STATES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}

DecisionOutcome = Literal["allowed", "limited", "shadow_limited"]
CacheResult = Literal["hit", "miss", "stale", "bypass", "revalidated"]

_ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess(path: str | os.PathLike[str]) -> Path:
    """Switch this process (and the workers it forks or spawns) to multiprocess metrics.

    prometheus-client decides per process, from ``PROMETHEUS_MULTIPROC_DIR``, whether values live
    in memory or in per-process files; this sets the variable (inherited by children) and swaps
    the value class for metrics created from now on. Call it at the edge, once, before creating
    any :class:`Metrics`. Stale files of a previous run are removed so that counters restart at 0.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    except OSError as exc:
        raise ConfigurationError(f"metrics_dir {str(directory)!r}: {exc}") from exc
    os.environ[_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return directory


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process writes to, or ``None`` in single-process mode."""
    return os.environ.get(_ENV) or None


class LiveSink(Protocol):
    """Receives a copy of some recordings for the live dashboard (``events.LiveStats``)."""

    def request(self, status: int, upstream: str | None, seconds: float) -> None: ...

    def count(self, field: str, n: int = 1) -> None: ...

    def gauge(self, field: str, value: float) -> None: ...


def _label(value: str) -> str:
    # An empty label value is legal but unreadable in a panel; name the absence instead.
    return value or "none"


class Metrics:
    """Gatekeeper's metrics on one registry, with cheap typed recording methods.

    ``registry`` defaults to a fresh :class:`~prometheus_client.CollectorRegistry` (never the
    global default one, so that two apps in one test process do not collide). When ``live`` is
    set, requests, limiter, cache, queue and waiting-room recordings are also counted per second
    for the dashboards.
    """

    live: LiveSink | None = None

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._multiprocess_dir = multiprocess_dir()
        # Hot-path recordings are tallied in plain numbers and folded into the children when
        # the registry is collected (a scrape, get_sample_value): registered before every
        # metric below, so it is collected first. Several processes share files instead: each
        # recording is written through at once there (another worker may render the files).
        self._tallies: dict[tuple[Any, Any], list[float]] = {}
        self._deferred = self._multiprocess_dir is None
        r = self.registry
        r.register(_Fold(self.fold))
        self.http_requests = Counter(
            "gatekeeper_http_requests_total",
            "Requests answered on proxied routes, by route name, HTTP status and the route's "
            "upstream pool.",
            ["route", "status", "upstream"],
            registry=r,
        )
        self.http_duration = Histogram(
            "gatekeeper_http_request_duration_seconds",
            "Time from the request's arrival to the last byte of its response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "gatekeeper_http_requests_in_flight",
            "Requests being handled right now (summed over worker processes).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.upstream_duration = Histogram(
            "gatekeeper_upstream_request_duration_seconds",
            "Time one upstream attempt took, from sending the request to its last byte.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_attempts = Counter(
            "gatekeeper_upstream_attempts_total",
            "Attempts sent to an endpoint, by outcome (ok, http_5xx, timeout, connect_error).",
            ["upstream", "endpoint", "outcome"],
            registry=r,
        )
        self.upstream_retries = Counter(
            "gatekeeper_upstream_retries_total",
            "Attempts that were retries of an idempotent request.",
            ["upstream"],
            registry=r,
        )
        self.endpoint_healthy = Gauge(
            "gatekeeper_upstream_endpoint_healthy",
            "1 if the health checker considers the endpoint healthy, else 0.",
            ["upstream", "endpoint"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.ejections = Counter(
            "gatekeeper_upstream_ejections_total",
            "Times an endpoint was taken out of rotation (failed checks or outlier detection).",
            ["upstream", "endpoint"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "gatekeeper_upstream_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["upstream", "endpoint"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.breaker_transitions = Counter(
            "gatekeeper_upstream_breaker_transitions_total",
            "Circuit breaker transitions, by the state entered.",
            ["upstream", "endpoint", "state"],
            registry=r,
        )
        self.decisions = Counter(
            "gatekeeper_ratelimit_decisions_total",
            "Rate-limit verdicts per policy: allowed, limited, or shadow_limited (a shadow "
            "policy that would have denied).",
            ["policy", "outcome"],
            registry=r,
        )
        self.degraded = Counter(
            "gatekeeper_ratelimit_degraded_decisions_total",
            "Decisions made without the shared store, by policy and mode (fail_open, "
            "fail_closed, local).",
            ["policy", "mode"],
            registry=r,
        )
        self.degraded_part = Gauge(
            "gatekeeper_degraded",
            "1 while a part serves degraded, as /ready last reported it (store, limiter, "
            "pool:<name>), else 0.",
            ["part"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.store_duration = Histogram(
            "gatekeeper_ratelimit_store_duration_seconds",
            "Duration of one call to the limit store (one call may carry many decisions).",
            ["store"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "gatekeeper_admission_queue_depth",
            "Requests waiting in the admission queue of an upstream (summed over workers).",
            ["upstream"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_wait = Histogram(
            "gatekeeper_admission_queue_wait_seconds",
            "Time a request waited in the admission queue before being admitted or rejected.",
            ["upstream"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.queue_rejections = Counter(
            "gatekeeper_admission_rejections_total",
            "Requests the admission queue turned away, by reason (full, timeout).",
            ["upstream", "reason"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "gatekeeper_cache_lookups_total",
            "HTTP cache lookups by route and result (hit, miss, stale, bypass, revalidated).",
            ["route", "result"],
            registry=r,
        )
        self.wr_queue_length = Gauge(
            "gatekeeper_waitingroom_queue_length",
            "Visitors waiting in a tenant's waiting room (the shared queue's length).",
            ["tenant"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.wr_admissions = Counter(
            "gatekeeper_waitingroom_admissions_total",
            "Visitors admitted from a tenant's waiting room.",
            ["tenant"],
            registry=r,
        )
        self.wr_abandoned = Counter(
            "gatekeeper_waitingroom_abandoned_total",
            "Visitors who left the queue, or whose admission expired unused.",
            ["tenant"],
            registry=r,
        )
        self.wr_tokens_issued = Counter(
            "gatekeeper_waitingroom_tokens_issued_total",
            "Waiting-room tokens signed.",
            ["tenant"],
            registry=r,
        )
        self.wr_tokens_verified = Counter(
            "gatekeeper_waitingroom_tokens_verified_total",
            "Waiting-room token verifications, by outcome (valid, invalid, expired).",
            ["tenant", "outcome"],
            registry=r,
        )
        self.geo_requests = Counter(
            "gatekeeper_geo_requests_total",
            "Requests of geo routes, by route, the datacenter that served them and the "
            "client's region.",
            ["route", "datacenter", "region"],
            registry=r,
        )
        self.geo_lookups = Counter(
            "gatekeeper_geo_lookups_total",
            "How geo routes placed their clients: located (a position), country (no position), "
            "private (not a global address), unresolved (not in the database).",
            ["result"],
            registry=r,
        )
        self.geo_failovers = Counter(
            "gatekeeper_geo_failovers_total",
            "Requests served by a datacenter because a nearer allowed one had no healthy "
            "endpoint, by the datacenter that served.",
            ["route", "datacenter"],
            registry=r,
        )
        self.geo_refusals = Counter(
            "gatekeeper_geo_refusals_total",
            "Geo route requests refused with 503, by reason (residency, no_datacenter).",
            ["route", "reason"],
            registry=r,
        )
        self.geo_distance = Histogram(
            "gatekeeper_geo_distance_kilometres",
            "Distance between a located client and the datacenter that served it.",
            ["route"],
            buckets=DISTANCE_BUCKETS,
            registry=r,
        )
        # Pre-bound children, keyed by label values: hot paths skip the labels() lock.
        self._req: dict[tuple[str, int, str], tuple[Any, Any]] = {}
        self._attempts: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        # (policy, outcome) -> [counter child, live field, count not folded yet]
        # (policy, outcome) or ("cache", route, result) -> [child, live name, counts to fold]
        # (or a counter child itself: geo counts, _count) -> the same
        self._verdicts: dict[Any, list[Any]] = {}
        # (route, datacenter, region, lookup, failover) -> counts not folded yet
        self._geo: dict[tuple[str, str, str, str, bool], list[Any]] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _tally(self, children: tuple[Any, Any], seconds: float) -> None:
        """Count one event on ``children`` (a counter child, a histogram child) and observe
        ``seconds``: three plain-number additions instead of three locked updates."""
        tally = self._tallies.get(children)
        if tally is None:
            if not self._deferred:
                children[0].inc()
                children[1].observe(seconds)
                return
            bounds = children[1]._upper_bounds
            # [count, sum, one count per bucket]; the bounds are kept for fold().
            tally = self._tallies[children] = [0, 0.0] + [0] * len(bounds)
        tally[0] += 1
        tally[1] += seconds
        tally[2 + bisect_left(children[1]._upper_bounds, seconds)] += 1

    def fold(self) -> None:
        """Add the tallied recordings to the Prometheus children (done before each collect)."""
        self._fold_geo()
        for entry in self._verdicts.values():
            if entry[2]:
                n, entry[2] = entry[2], 0
                entry[0].inc(n)
        tallies, self._tallies = self._tallies, {}
        for (counter, histogram), tally in tallies.items():
            if not tally[0]:
                continue
            counter.inc(tally[0])
            # prometheus-client 0.2x: a histogram child's sum and per-bucket values (the
            # same updates observe() makes, once per fold instead of once per request).
            histogram._sum.inc(tally[1])
            buckets = histogram._buckets
            for index, n in enumerate(tally[2:]):
                if n:
                    buckets[index].inc(n)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def degraded_parts(self, parts: dict[str, bool]) -> None:
        """Set the ``gatekeeper_degraded`` gauge of each part (True: degraded)."""
        for part, degraded in parts.items():
            self._child(self.degraded_part, part).set(1 if degraded else 0)

    # -- the request path --------------------------------------------------------------------

    def request(self, route: str, status: int, upstream: str | None, seconds: float) -> None:
        """Count one answered request and observe its total latency."""
        key = (route, status, upstream or "")
        pair = self._req.get(key)
        if pair is None:
            name = _label(route)
            pair = self._req[key] = (
                self.http_requests.labels(name, str(status), _label(upstream or "")),
                self._child(self.http_duration, name),
            )
        self._tally(pair, seconds)
        if self.live is not None:
            self.live.request(status, upstream, seconds)

    def request_started(self) -> None:
        """A request entered the gateway (pair with :meth:`request_finished`)."""
        self.in_flight.inc()

    def request_finished(self) -> None:
        """A request left the gateway, whatever its outcome."""
        self.in_flight.dec()

    def upstream_attempt(
        self, upstream: str, endpoint: str, outcome: str, seconds: float, *, retry: bool = False
    ) -> None:
        """One attempt against an endpoint: ``outcome`` is ok, http_5xx, timeout or
        connect_error."""
        # Hot path (once per proxied request): one dict lookup for both children.
        key = (upstream, endpoint, outcome)
        children = self._attempts.get(key)
        if children is None:
            children = self._attempts[key] = (
                self._child(self.upstream_attempts, upstream, endpoint, outcome),
                self._child(self.upstream_duration, upstream),
            )
        self._tally(children, seconds)
        if retry:
            self._child(self.upstream_retries, upstream).inc()

    # -- the limiter ------------------------------------------------------------------------

    def decision(self, policy: str, outcome: DecisionOutcome, count: int = 1) -> None:
        """Count ``count`` verdicts of one policy (batched engines may pass several at once)."""
        key = (policy, outcome)
        entry = self._verdicts.get(key)
        if entry is None:
            child = self._child(self.decisions, _label(policy), outcome)
            entry = self._verdicts[key] = [child, f"pol:{policy}:{outcome}", 0]
        if self._deferred:
            entry[2] += count
        else:
            entry[0].inc(count)
        if self.live is not None:
            self.live.count(entry[1], count)

    def degraded_decision(self, mode: str, count: int = 1, policy: str = "") -> None:
        """Count decisions of ``policy`` made without the store (``fail_open``,
        ``fail_closed``, ``local``)."""
        self._child(self.degraded, policy, mode).inc(count)
        if self.live is not None:
            self.live.count(f"deg:{mode}", count)

    def store_call(self, store: str, seconds: float) -> None:
        """Observe one round trip to the limit store (``redis``, ``memory``)."""
        self._child(self.store_duration, store).observe(seconds)

    # -- resilience ---------------------------------------------------------------------------

    def endpoint_health(self, upstream: str, endpoint: str, healthy: bool) -> None:
        """Publish an endpoint's health as the checker sees it."""
        self._child(self.endpoint_healthy, upstream, endpoint).set(1 if healthy else 0)

    def ejection(self, upstream: str, endpoint: str) -> None:
        """Count an endpoint taken out of rotation."""
        self._child(self.ejections, upstream, endpoint).inc()

    def breaker(self, upstream: str, endpoint: str, state: str) -> None:
        """Record a breaker entering ``state`` (closed, half_open, open)."""
        try:
            value = BREAKER_STATES[state]
        except KeyError:
            raise ConfigurationError(
                f"breaker state {state!r}: expected one of {sorted(BREAKER_STATES)}"
            ) from None
        self._child(self.breaker_state, upstream, endpoint).set(value)
        self._child(self.breaker_transitions, upstream, endpoint, state).inc()

    # -- admission queue and cache ------------------------------------------------------------

    def queue_depth_set(self, upstream: str, depth: int) -> None:
        """Publish how many requests wait in an upstream's admission queue."""
        self._child(self.queue_depth, upstream).set(depth)
        if self.live is not None:
            self.live.gauge(f"queue:{upstream}", depth)

    def queue_waited(self, upstream: str, seconds: float, rejected: str | None = None) -> None:
        """Observe one wait in the admission queue; ``rejected`` is ``full`` or ``timeout``."""
        self._child(self.queue_wait, upstream).observe(seconds)
        if rejected is not None:
            self._child(self.queue_rejections, upstream, rejected).inc()

    def cache(self, route: str, result: CacheResult) -> None:
        """Count one cache lookup (tallied like the limiter's verdicts: a hit is cheap)."""
        key = ("cache", route, result)
        entry = self._verdicts.get(key)
        if entry is None:
            child = self._child(self.cache_lookups, _label(route), result)
            entry = self._verdicts[key] = [child, f"cache:{result}", 0]
        if self._deferred:
            entry[2] += 1
        else:
            entry[0].inc()
        if self.live is not None:
            self.live.count(entry[1])

    # -- geographic routing -------------------------------------------------------------------

    def geo_routed(
        self,
        route: str,
        datacenter: str,
        region: str,
        lookup: str,
        failover: bool,
        km: float | None,
    ) -> None:
        """Count one request a geo route sent to ``datacenter`` (``km``: the distance of a
        located client, observed; ``None``: its position is unknown)."""
        key = (route, datacenter, region, lookup, failover)
        tally = self._geo.get(key)
        if tally is None:
            children = self._geo_children(key)
            if not self._deferred:  # several processes share files: write through
                children[0].inc()
                children[2].inc()
                if children[3] is not None:
                    children[3].inc()
                if km is not None:
                    children[1].observe(km)
                return
            # [requests, located, sum of km, one count per distance bucket]
            tally = self._geo[key] = [0, 0, 0.0] + [0] * len(children[1]._upper_bounds)
        tally[0] += 1
        if km is not None:
            tally[1] += 1
            tally[2] += km
            tally[3 + bisect_left(DISTANCE_BOUNDS, km)] += 1

    def _geo_children(self, key: tuple[str, str, str, str, bool]) -> tuple[Any, Any, Any, Any]:
        """The children one geo request counts on: requests, distance, lookups, failovers."""
        route, datacenter, region, lookup, failover = key
        return (
            self._child(self.geo_requests, route, datacenter, region),
            self._child(self.geo_distance, route),
            self._child(self.geo_lookups, lookup),
            self._child(self.geo_failovers, route, datacenter) if failover else None,
        )

    def _fold_geo(self) -> None:
        for key, tally in self._geo.items():
            if not tally[0]:
                continue
            requests, distance, lookups, failovers = self._geo_children(key)
            requests.inc(tally[0])
            lookups.inc(tally[0])
            if failovers is not None:
                failovers.inc(tally[0])
            if tally[1]:
                distance._sum.inc(tally[2])  # as fold() does for the request histograms
                for index, n in enumerate(tally[3:]):
                    if n:
                        distance._buckets[index].inc(n)
            tally[:] = [0, 0, 0.0] + [0] * (len(tally) - 3)

    def geo_refused(self, route: str, reason: str) -> None:
        """Count a geo route's request refused (``residency``, ``no_datacenter``)."""
        self._count(self._child(self.geo_refusals, route, reason))

    def _count(self, child: Any) -> None:
        """One increment of a counter child, deferred to the next fold like the verdicts."""
        if not self._deferred:
            child.inc()
            return
        entry = self._verdicts.get(child)
        if entry is None:
            entry = self._verdicts[child] = [child, None, 0]
        entry[2] += 1

    # -- waiting room -------------------------------------------------------------------------

    def waitingroom_length(self, tenant: str, length: int) -> None:
        """Publish a tenant's queue length."""
        self._child(self.wr_queue_length, tenant).set(length)
        if self.live is not None:
            self.live.gauge(f"wr_len:{tenant}", length)

    def waitingroom_admitted(self, tenant: str, count: int = 1) -> None:
        """Count visitors admitted."""
        if count:
            self._child(self.wr_admissions, tenant).inc(count)
            if self.live is not None:
                self.live.count(f"wr_adm:{tenant}", count)

    def waitingroom_abandoned(self, tenant: str, count: int = 1) -> None:
        """Count visitors who left or whose admission expired unused."""
        if count:
            self._child(self.wr_abandoned, tenant).inc(count)
            if self.live is not None:
                self.live.count(f"wr_abn:{tenant}", count)

    def token_issued(self, tenant: str) -> None:
        """Count one signed waiting-room token."""
        self._child(self.wr_tokens_issued, tenant).inc()
        if self.live is not None:
            self.live.count(f"wr_tok:{tenant}")

    def token_verified(self, tenant: str, outcome: str) -> None:
        """Count one verification: ``valid``, ``invalid`` or ``expired``."""
        self._child(self.wr_tokens_verified, tenant, outcome).inc()

    # -- exposition -----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition (``Content-Type``: :data:`CONTENT_TYPE`).

        In multiprocess mode this aggregates the files of every worker, so any worker answers
        for the whole process group.
        """
        if self._multiprocess_dir is not None:
            self.fold()
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    def close(self) -> None:
        """Forget this process's live gauges (call when a worker exits)."""
        if self._multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self._multiprocess_dir)  # type: ignore[no-untyped-call]


class _Fold(Collector):
    """Collected first: folds the tallies of :class:`Metrics` into its children; yields no
    metric of its own."""

    def __init__(self, fold: Any) -> None:
        self._fold = fold

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        self._fold()
        return []
