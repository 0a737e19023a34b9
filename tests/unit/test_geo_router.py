"""The choice of a datacenter per request, on real pools whose endpoints the test marks down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatekeeper.gateway.config import parse_config
from gatekeeper.gateway.flow.routing import Route
from gatekeeper.gateway.geo import GeoRouter, GeoStats, Refusal, haversine_km, route_policy
from gatekeeper.gateway.http.messages import Body, ProxyRequest
from gatekeeper.gateway.upstream.pool import UpstreamPool, pool_from_config
from gatekeeper.observability.metrics import Metrics
from gatekeeper.testing import FakeClock
from tests.geo_data import DATACENTERS, geo_section, write_mmdb

LONDON, SEATTLE, MANILA, BHUTAN = "81.2.69.142", "216.160.83.56", "202.196.224.1", "67.43.156.1"


def _config(database: Path, routes: list[dict[str, Any]], **geo: Any) -> Any:
    return parse_config(
        {
            "upstreams": {
                name: {
                    "endpoints": [f"http://127.0.0.1:{9001 + i}", f"http://127.0.0.1:{9101 + i}"]
                }
                for i, name in enumerate(DATACENTERS)
            },
            "geo": geo_section(database, **geo),
            "routes": routes,
        }
    )


class Setup:
    """A router over real pools, and one route per configured route."""

    def __init__(self, tmp_path: Path, routes: list[dict[str, Any]], **geo: Any) -> None:
        self.clock = FakeClock()
        self.config = _config(write_mmdb(tmp_path / "geo.mmdb"), routes, **geo)
        self.pools: dict[str, UpstreamPool] = {
            name: pool_from_config(name, uc, clock=self.clock)
            for name, uc in self.config.upstreams.items()
        }
        self.metrics = Metrics()
        self.router = GeoRouter(self.config.geo, self.pools, metrics=self.metrics)
        self.routes = {
            rc.name: Route(name=rc.name, upstream="", geo=route_policy(rc.geo, self.config.geo))
            for rc in self.config.routes
        }

    def send(
        self, route: str, client: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> Any:
        request = ProxyRequest("GET", b"/", "/", list(headers or []), Body.of(), client_ip=client)
        chosen = self.router.route(self.routes[route], request)
        return chosen, request

    def down(self, datacenter: str, *, healthy: bool = False) -> None:
        for endpoint in self.pools[datacenter].endpoints:
            endpoint.healthy = healthy


EVERYWHERE = [{"name": "geo", "path_prefix": "/", "geo": True}]


def test_each_client_goes_to_its_nearest_datacenter_with_headers(tmp_path: Path) -> None:
    """London -> eu-west, Seattle -> us-east, Manila -> ap-south: the request's upstream is the
    datacenter's pool, the answer fields name it, the upstream is told the client's region."""
    setup = Setup(tmp_path, EVERYWHERE)
    for client, datacenter, region in (
        (LONDON, "eu-west", b"eu"), (SEATTLE, "us-east", b"us"), (MANILA, "ap-south", b"ap"),
    ):  # fmt: skip
        chosen, request = setup.send("geo", client)
        assert chosen.name == datacenter
        assert request.upstream == datacenter
        assert chosen.fields == [
            (b"x-datacenter", datacenter.encode()),
            (b"x-datacenter-region", DATACENTERS[datacenter][0].encode()),
        ]
        assert request.header(b"x-client-region") == region


def test_a_region_header_sent_by_the_client_is_replaced(tmp_path: Path) -> None:
    """A client claiming X-Client-Region: ap from London: the upstream sees eu, once."""
    setup = Setup(tmp_path, EVERYWHERE)
    _, request = setup.send("geo", LONDON, [(b"x-client-region", b"ap"), (b"accept", b"*/*")])
    assert [v for k, v in request.headers if k == b"x-client-region"] == [b"eu"]
    assert request.header(b"accept") == b"*/*"


def test_configured_header_names_are_used_and_null_ones_left_out(tmp_path: Path) -> None:
    """headers: {datacenter: X-Served-By, region: null, client_region: X-Geo}."""
    setup = Setup(
        tmp_path, EVERYWHERE,
        headers={"datacenter": "X-Served-By", "region": None, "client_region": "X-Geo"},
    )  # fmt: skip
    chosen, request = setup.send("geo", LONDON)
    assert chosen.fields == [(b"x-served-by", b"eu-west")]
    assert request.header(b"x-geo") == b"eu"
    assert request.header(b"x-client-region") is None


def test_a_datacenter_without_a_healthy_endpoint_fails_over_to_the_next_nearest(
    tmp_path: Path,
) -> None:
    """eu-west down: London goes to us-east (nearer than Mumbai) and it counts as a failover;
    eu-west back: London returns to it."""
    setup = Setup(tmp_path, EVERYWHERE)
    setup.down("eu-west")
    chosen, _ = setup.send("geo", LONDON)
    assert chosen.name == "us-east"
    stats = setup.router.stats
    assert stats.failovers == 1
    assert stats.failovers_by_datacenter == {"us-east": 1}
    setup.down("eu-west", healthy=True)
    chosen, _ = setup.send("geo", LONDON)
    assert chosen.name == "eu-west"
    assert stats.failovers == 1


def test_one_healthy_endpoint_is_enough_for_a_datacenter(tmp_path: Path) -> None:
    """Half of eu-west down is no failover: the pool still has an endpoint."""
    setup = Setup(tmp_path, EVERYWHERE)
    setup.pools["eu-west"].endpoints[0].healthy = False
    chosen, _ = setup.send("geo", LONDON)
    assert chosen.name == "eu-west"
    assert setup.router.stats.failovers == 0


def test_residency_refuses_rather_than_crossing_and_leaves_other_regions_alone(
    tmp_path: Path,
) -> None:
    """EU clients pinned to EU: eu-west down means a residency refusal for London (naming the
    region and the datacenters allowed), while Seattle is served and an unpinned route still
    fails London over."""
    eu_stays = {"residency": [{"from": ["eu"], "to": ["eu"]}]}
    routes = [
        {"name": "pinned", "path_prefix": "/p", "geo": eu_stays},
        {"name": "free", "path_prefix": "/f", "geo": True},
    ]
    setup = Setup(tmp_path, routes)
    setup.down("eu-west")
    refused, request = setup.send("pinned", LONDON)
    assert isinstance(refused, Refusal)
    assert refused.error == "residency_unavailable"
    assert (refused.region, refused.datacenters) == ("eu", ("eu-west",))
    assert "region 'eu'" in refused.detail
    assert "residency" in refused.detail
    assert request.upstream is None
    assert request.header(b"x-client-region") is None
    served, _ = setup.send("pinned", SEATTLE)
    assert served.name == "us-east"
    failed_over, _ = setup.send("free", LONDON)
    assert failed_over.name == "us-east"
    assert setup.router.stats.refused == {"residency": 1}


def test_no_datacenter_at_all_is_a_no_healthy_upstream_refusal(tmp_path: Path) -> None:
    """Every datacenter down on an unpinned route: 503 no_healthy_upstream, counted."""
    setup = Setup(tmp_path, EVERYWHERE)
    for name in DATACENTERS:
        setup.down(name)
    refused, _ = setup.send("geo", SEATTLE)
    assert isinstance(refused, Refusal)
    assert refused.error == "no_healthy_upstream"
    assert refused.datacenters == ("us-east", "eu-west", "ap-south")
    assert setup.router.stats.refused == {"no_datacenter": 1}
    assert (
        setup.metrics.registry.get_sample_value(
            "gatekeeper_geo_refusals_total", {"route": "geo", "reason": "no_datacenter"}
        )
        == 1
    )


def test_latency_weighting_can_prefer_a_farther_but_faster_datacenter(tmp_path: Path) -> None:
    """With 10 km per ms, eu-west answering in 900 ms loses London (463 km) to us-east
    (~5900 km) answering in 5 ms; without weighting London stays in eu-west."""
    routes = [
        {"name": "weighted", "path_prefix": "/w", "geo": {"latency_km_per_ms": 10}},
        {"name": "plain", "path_prefix": "/p", "geo": True},
    ]
    setup = Setup(tmp_path, routes)
    now = setup.clock.monotonic()
    for name, seconds in (("eu-west", 0.9), ("us-east", 0.005), ("ap-south", 0.005)):
        for endpoint in setup.pools[name].endpoints:
            endpoint.observe_latency(seconds, now, 10.0)
    chosen, _ = setup.send("weighted", LONDON)
    assert chosen.name == "us-east"
    assert setup.router.stats.failovers == 0  # a choice, not a failure
    plain, _ = setup.send("plain", LONDON)
    assert plain.name == "eu-west"


def test_private_and_country_only_clients_are_served_from_their_region(tmp_path: Path) -> None:
    """Loopback: the default region's datacenter (us-east); Bhutan (no position): ap-south;
    neither adds a distance sample."""
    setup = Setup(tmp_path, EVERYWHERE)
    assert setup.send("geo", "127.0.0.1")[0].name == "us-east"
    assert setup.send("geo", BHUTAN)[0].name == "ap-south"
    stats = setup.router.stats
    assert stats.lookups == {"private": 1, "country": 1}
    assert stats.by_country == {"private": 1, "BT": 1}
    assert stats.distances() == {"samples": 0}


def test_stats_and_metrics_count_by_datacenter_region_and_country(tmp_path: Path) -> None:
    """/geo/stats' counters and the Prometheus series agree on what was routed."""
    setup = Setup(tmp_path, EVERYWHERE)
    for client in (LONDON, LONDON, SEATTLE, "9.9.9.9"):
        setup.send("geo", client)
    body = setup.router.describe()
    assert body["requests"] == 4
    assert body["by_datacenter"] == {"eu-west": 2, "us-east": 2}
    assert body["by_region"] == {"eu": 2, "us": 2}
    assert body["by_country"] == {"GB": 2, "US": 1, "unknown": 1}
    assert body["unresolved"] == 1
    assert body["distance_km"]["samples"] == 3
    london_dublin = haversine_km(51.5142, -0.0931, 53.35, -6.26)
    assert body["distance_km"]["p50"] == pytest.approx(london_dublin, abs=0.1)
    assert [dc["available"] for dc in body["datacenters"]] == [True, True, True]
    assert body["database"]["type"] == "Test-City"
    assert body["cache"] == {"addresses": 3, "lookups": 3}
    sample = setup.metrics.registry.get_sample_value
    assert (
        sample(
            "gatekeeper_geo_requests_total",
            {"route": "geo", "datacenter": "eu-west", "region": "eu"},
        )
        == 2
    )
    assert sample("gatekeeper_geo_lookups_total", {"result": "unresolved"}) == 1
    assert sample("gatekeeper_geo_distance_kilometres_count", {"route": "geo"}) == 3
    setup.send("geo", LONDON)  # counted once more, whatever was folded before
    labels = {"route": "geo", "datacenter": "eu-west", "region": "eu"}
    assert sample("gatekeeper_geo_requests_total", labels) == 3
    assert sample("gatekeeper_geo_lookups_total", {"result": "located"}) == 4


def test_distance_percentiles_use_the_last_samples_and_countries_are_bounded() -> None:
    """Nearest-rank percentiles over the ring; country 513 onwards counts as "other"."""
    stats = GeoStats()
    for km in range(1, 101):
        stats.distance(float(km))
    assert stats.distances() == {
        "samples": 100, "p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "max": 100.0,
    }  # fmt: skip
    for i in range(600):
        stats.served("dc", "r", f"C{i}", "located", False)
    assert len(stats.by_country) == 513
    assert stats.by_country["other"] == 600 - 512


def test_a_copy_made_for_revalidation_goes_to_the_same_datacenter(tmp_path: Path) -> None:
    """The cache revalidates with a copy of the request (conditional headers): it keeps the
    datacenter the geo step chose, so forwarding sends it to the same pool."""
    setup = Setup(tmp_path, EVERYWHERE)
    _, request = setup.send("geo", LONDON)
    copy = request.replace_headers([*request.headers, (b"if-none-match", b'"v1"')])
    assert copy.upstream == "eu-west"
