"""The choice of a datacenter for each request of a geo route, written once.

A :class:`GeoRouter` is built with each configuration (it is the snapshot's ``geo``); a route's
``geo:`` becomes a :class:`~.policy.GeoPolicy` (which datacenters may serve clients of each
region). For
one request :meth:`GeoRouter.route`:

1. places the client's address (:class:`~.locator.Locator`, cached per address);
2. walks the datacenters nearest first, skipping those the policy does not allow for the
   client's region, and takes the first whose pool has an endpoint that may take a request
   (healthy by the active checks, not ejected, breaker letting it through); with
   ``latency_km_per_ms`` the allowed datacenters are scored ``km + weight x latency_ms`` (the
   pool's peak-EWMA estimate) instead;
3. sets the request's ``upstream`` to that datacenter's pool (forwarding, its attempts and
   retries, stay the gateway's one :class:`~gatekeeper.gateway.upstream.forward.Forwarding`)
   and the client's region header;
4. or refuses: 503 ``residency_unavailable`` when residency keeps the client's region to
   datacenters of which none can serve now, 503 ``no_healthy_upstream`` otherwise.

A *failover* is a request whose nearest allowed datacenter could not serve it. A datacenter's
return needs nothing: as soon as its pool has a serving endpoint again (the health checks
say so), it is the nearest again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gatekeeper.gateway.geo.database import GeoDatabase
from gatekeeper.gateway.geo.locator import Locator, Place
from gatekeeper.gateway.geo.policy import GeoPolicy
from gatekeeper.gateway.geo.stats import GeoStats
from gatekeeper.gateway.http.messages import find_header

if TYPE_CHECKING:
    from gatekeeper.gateway.geo.config import GeoConfig
    from gatekeeper.gateway.http.messages import ProxyRequest

__all__ = ["Datacenter", "GeoRouter", "Refusal"]

logger = logging.getLogger("gatekeeper.gateway.geo")

Headers = list[tuple[bytes, bytes]]


class Datacenter:
    """One configured datacenter, its pool and the answer fields naming it."""

    __slots__ = ("fields", "latitude", "longitude", "name", "pool", "region", "upstream")

    def __init__(
        self,
        name: str,
        region: str,
        latitude: float,
        longitude: float,
        upstream: str,
        pool: Any,
        fields: Headers,
    ) -> None:
        self.name = name
        self.region = region
        self.latitude = latitude
        self.longitude = longitude
        self.upstream = upstream
        self.pool = pool
        self.fields = fields


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why no datacenter serves a request: a problem document's code, detail and fields."""

    error: str
    detail: str
    region: str
    datacenters: tuple[str, ...]


def _field(name: str | None, value: str) -> list[tuple[bytes, bytes]]:
    return [] if name is None else [(name.lower().encode("latin-1"), value.encode("latin-1"))]


class GeoRouter:
    """Chooses datacenters (see the module docstring). Opening it opens the database:
    ConfigurationError naming the file when it is missing or not a MaxMind DB."""

    def __init__(
        self,
        config: GeoConfig,
        pools: dict[str, Any],
        *,
        stats: GeoStats | None = None,
        metrics: Any = None,
    ) -> None:
        self.config = config
        self.database = GeoDatabase.open(config.database)
        self.regions = tuple(config.regions)
        index = {name: i for i, name in enumerate(self.regions)}
        headers = config.headers
        self.datacenters = tuple(
            Datacenter(
                name,
                dc.region,
                dc.latitude,
                dc.longitude,
                dc.upstream,
                pools[dc.upstream],
                _field(headers.datacenter, name) + _field(headers.region, dc.region),
            )
            for name, dc in config.datacenters.items()
        )
        self.locator = Locator(
            self.database,
            countries={c: index[r] for r, spec in config.regions.items() for c in spec.countries},
            continents={c: index[r] for r, spec in config.regions.items() for c in spec.continents},
            default_region=index[config.fallback_region],
            regions=len(self.regions),
            sites=[(dc.latitude, dc.longitude) for dc in self.datacenters],
            site_regions=[index[dc.region] for dc in self.datacenters],
            cache_size=config.cache_size,
        )
        name = headers.client_region
        self.client_header = name.lower().encode("latin-1") if name else None
        self.region_values = tuple(r.encode("latin-1") for r in self.regions)
        self.stats = stats if stats is not None else GeoStats()
        self.metrics = metrics
        self._watcher: asyncio.Task[None] | None = None

    # -- the request path -------------------------------------------------------------------
    def route(self, route: Any, request: ProxyRequest) -> Datacenter | Refusal:
        """The datacenter for ``request`` of the geo route ``route`` (its ``upstream`` and the
        client-region header set), or why there is none; counted either way."""
        place = self.locator.place(request.client_ip)
        policy: GeoPolicy = route.geo
        region = place.region
        allowed = policy.allowed[region]
        datacenters = self.datacenters
        chosen = -1
        failover = False
        if policy.latency_km_per_ms:
            chosen, failover = self._scored(place, allowed, policy.latency_km_per_ms)
        else:
            for i in place.order:
                if allowed[i]:
                    if datacenters[i].pool.has_available():
                        chosen = i
                        break
                    failover = True
        region_name = self.regions[region]
        if chosen < 0:
            return self._refuse(route, policy, region, region_name)
        datacenter = datacenters[chosen]
        request.upstream = datacenter.upstream
        name = self.client_header
        if name is not None:
            headers = request.headers
            if find_header(headers, name) is not None:  # the client's own is never believed
                headers = request.headers = [h for h in headers if h[0] != name]
            headers.append((name, self.region_values[region]))
        stats = self.stats
        lookup = place.lookup
        stats.served(datacenter.name, region_name, place.country, lookup, failover)
        km = place.km[chosen] if lookup == "located" else None
        if km is not None:
            stats.distance(km)
        metrics = self.metrics
        if metrics is not None:
            metrics.geo_routed(route.name, datacenter.name, region_name, lookup, failover, km)
        return datacenter

    def _scored(self, place: Place, allowed: tuple[bool, ...], weight: float) -> tuple[int, bool]:
        """The allowed datacenter of least ``km + weight x latency_ms`` among those that may
        serve, and whether the nearest allowed one could not."""
        best, best_score = -1, 0.0
        nearest_serves: bool | None = None
        for i in place.order:
            if not allowed[i]:
                continue
            latency = self.datacenters[i].pool.latency_ms()
            if nearest_serves is None:
                nearest_serves = latency is not None
            if latency is None:
                continue
            score = place.km[i] + weight * latency
            if best < 0 or score < best_score:
                best, best_score = i, score
        return best, nearest_serves is False

    def _refuse(self, route: Any, policy: GeoPolicy, region: int, name: str) -> Refusal:
        names = policy.names[region]
        if policy.pinned[region]:
            reason = "residency"
            refusal = Refusal(
                "residency_unavailable",
                f"no datacenter where clients from region {name!r} may be served "
                f"({', '.join(names)}) has a healthy endpoint; residency rules keep them there",
                name,
                names,
            )
        else:
            reason = "no_datacenter"
            refusal = Refusal(
                "no_healthy_upstream",
                f"no datacenter of route {route.name!r} ({', '.join(names)}) has a healthy "
                "endpoint",
                name,
                names,
            )
        self.stats.refusal(reason)
        if self.metrics is not None:
            self.metrics.geo_refused(route.name, reason)
        return refusal

    # -- the database file ------------------------------------------------------------------
    def refresh(self) -> bool:
        """Reopen the database if its file changed; True when a new one serves."""
        database = self.database
        if database.changed() and database.reopen():
            self.locator.reset()
            return True
        return False

    async def start(self) -> None:
        """Watch the database file (every ``watch_interval`` seconds; 0: never)."""
        if self.config.watch_interval > 0 and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(self.config.watch_interval), name="gatekeeper-geo-watch"
            )

    async def stop(self) -> None:
        """Stop watching (the open database stays readable for requests still in flight)."""
        task, self._watcher = self._watcher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self, interval: float) -> None:
        while True:  # ends when stop() cancels it
            await asyncio.sleep(interval)
            try:
                self.refresh()
            except Exception:  # a bug here must not end the watching
                logger.exception("checking the geo database file failed")

    # -- statistics -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The ``/geo/stats`` body: counters, datacenters as they stand, the database."""
        body = self.stats.as_dict()
        body["datacenters"] = [
            {
                "name": dc.name,
                "region": dc.region,
                "latitude": dc.latitude,
                "longitude": dc.longitude,
                "upstream": dc.upstream,
                "available": dc.pool.has_available(),
            }
            for dc in self.datacenters
        ]
        body["regions"] = list(self.regions)
        body["default_region"] = self.regions[self.locator.default_region]
        body["database"] = self.database.describe()
        body["cache"] = {"addresses": self.locator.cached, "lookups": self.locator.resolved}
        return body
