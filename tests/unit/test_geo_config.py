"""The geo YAML: a good file loads; every mistake is refused naming its field; route policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatekeeper.gateway.config import ConfigFileError, load_config, parse_config
from gatekeeper.gateway.geo import route_policy

GOOD = """
upstreams:
  us-east: {endpoints: [http://127.0.0.1:5001]}
  eu-west: {endpoints: [http://127.0.0.1:5002]}
  ap-south: {endpoints: [http://127.0.0.1:5003]}
geo:
  database: /var/lib/geoip/GeoLite2-City.mmdb
  default_region: eu
  regions:
    us: {continents: [na, SA]}
    eu: {continents: [EU, AF], countries: [tr]}
    ap: {continents: [AS, OC]}
  datacenters:
    us-east: {region: us, latitude: 39.04, longitude: -77.49, upstream: us-east}
    eu-west: {region: eu, latitude: 53.35, longitude: -6.26, upstream: eu-west}
    ap-south: {region: ap, latitude: 19.08, longitude: 72.88, upstream: ap-south}
  headers: {datacenter: X-DC, region: null}
routes:
  - name: everywhere
    path_prefix: /a
    geo: true
  - name: pinned
    path_prefix: /b
    geo:
      datacenters: [eu-west, us-east]
      latency_km_per_ms: 50
      residency:
        - {from: [eu], to: [eu]}
"""


def _data(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "upstreams": {"us": {"endpoints": ["http://127.0.0.1:5001"]}},
        "geo": {
            "database": "/x.mmdb",
            "regions": {"us": {"continents": ["NA"]}, "eu": {"continents": ["EU"]}},
            "datacenters": {
                "us-east": {"region": "us", "latitude": 1, "longitude": 2, "upstream": "us"}
            },
        },
        "routes": [{"name": "g", "path_prefix": "/g", "geo": True}],
    }
    base.update(changes)
    return base


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        parse_config(data, "gk.yaml")
    return caught.value.problems


def test_a_good_geo_file_loads(tmp_path: Path) -> None:
    """Codes are upper-cased, headers default or are left out, routes get their policies."""
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(GOOD)
    config = load_config(path)
    geo = config.geo
    assert geo is not None
    assert geo.regions["us"].continents == ["NA", "SA"]
    assert geo.regions["eu"].countries == ["TR"]
    assert geo.fallback_region == "eu"
    assert (geo.headers.datacenter, geo.headers.region) == ("X-DC", None)
    assert geo.headers.client_region == "X-Client-Region"
    assert config.routes[0].geo is True
    assert config.routes[0].upstream is None
    rule = config.routes[1].geo
    assert not isinstance(rule, bool)
    assert rule.residency[0].from_ == ["eu"]


def test_route_policies_apply_datacenter_lists_and_residency(tmp_path: Path) -> None:
    """``geo: true`` allows every datacenter to everyone; residency pins eu clients to eu
    datacenters only, others keep the route's list."""
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.geo is not None
    everywhere = route_policy(True, config.geo)
    assert everywhere.allowed == ((True, True, True),) * 3
    assert everywhere.pinned == (False, False, False)
    pinned_spec = config.routes[1].geo
    assert not isinstance(pinned_spec, bool)
    pinned = route_policy(pinned_spec, config.geo)
    us, eu, ap = pinned.allowed
    assert us == (True, True, False)
    assert ap == (True, True, False)
    assert eu == (False, True, False)
    assert pinned.pinned == (False, True, False)
    assert pinned.names[1] == ("eu-west",)
    assert pinned.latency_km_per_ms == 50


def test_references_to_unknown_regions_datacenters_and_upstreams_are_named() -> None:
    """Each dangling name is refused with its field path and the names that exist."""
    data = _data()
    data["geo"]["default_region"] = "mars"
    data["geo"]["datacenters"]["us-east"]["region"] = "moon"
    data["geo"]["datacenters"]["us-east"]["upstream"] = "nowhere"
    data["routes"] = [
        {"name": "g", "path_prefix": "/g",
         "geo": {"datacenters": ["atlantis"], "residency": [{"from": ["venus"], "to": ["us"]}]}},
    ]  # fmt: skip
    problems = _problems(data)
    assert "gk.yaml: geo.default_region: unknown region 'mars' (known: eu, us)" in problems
    assert "gk.yaml: geo.datacenters.us-east.region: unknown region 'moon' (known: eu, us)" in (
        problems
    )
    assert (
        "gk.yaml: geo.datacenters.us-east.upstream: unknown upstream 'nowhere' (known: us)"
        in problems
    )
    assert (
        "gk.yaml: routes.0.geo.datacenters.0: unknown datacenter 'atlantis' (known: us-east)"
        in problems
    )
    assert (
        "gk.yaml: routes.0.geo.residency.0.from.0: unknown region 'venus' (known: eu, us)"
        in problems
    )


def test_residency_towards_regions_without_a_datacenter_of_the_route_is_refused() -> None:
    """``to: [eu]`` on a route whose datacenters are all in us could only ever answer 503."""
    data = _data()
    data["routes"] = [
        {"name": "g", "path_prefix": "/g", "geo": {"residency": [{"from": ["eu"], "to": ["eu"]}]}}
    ]
    assert "gk.yaml: routes.0.geo.residency.0.to: no datacenter of this route is in eu" in (
        _problems(data)
    )


def test_a_route_needs_an_upstream_or_geo_and_not_both() -> None:
    """Neither: the upstream is required; both: geo chooses the upstream itself."""
    neither = _data(routes=[{"name": "r", "path_prefix": "/r"}])
    assert _problems(neither) == [
        "gk.yaml: routes.0.upstream: Field required (or geo: to choose it by location)"
    ]
    both = _data(routes=[{"name": "r", "path_prefix": "/r", "upstream": "us", "geo": True}])
    assert _problems(both) == [
        "gk.yaml: routes.0.geo: a geo route's upstream is its datacenter's: leave upstream out"
    ]


def test_a_geo_route_without_a_geo_section_is_refused() -> None:
    """geo: on a route needs the file's datacenters and database."""
    data = _data()
    del data["geo"]
    assert _problems(data) == [
        "gk.yaml: routes.0.geo: the file has no geo: section (database, regions, datacenters)"
    ]


def test_field_values_are_checked() -> None:
    """Bad codes, positions, header names, sizes: each refused at its path."""
    data = _data()
    geo = data["geo"]
    geo["regions"]["us"] = {"countries": ["USA"], "continents": ["XX"]}
    geo["datacenters"]["us-east"]["latitude"] = 91
    geo["headers"] = {"datacenter": "X Bad"}
    geo["cache_size"] = 1
    problems = "\n".join(_problems(data))
    assert "geo.regions.us.countries: 'USA' is not an ISO 3166-1 alpha-2 country code" in problems
    assert "geo.regions.us.continents: 'XX' is not a continent code" in problems
    assert "geo.datacenters.us-east.latitude: Input should be less than or equal to 90" in problems
    assert "geo.headers.datacenter: 'X Bad' is not a header field name" in problems
    assert "geo.cache_size: Input should be greater than or equal to 2" in problems


def test_a_country_or_continent_in_two_regions_is_refused() -> None:
    """Otherwise the region of its clients would depend on the file's order."""
    data = _data()
    data["geo"]["regions"]["eu"] = {"continents": ["EU", "NA"]}
    assert "gk.yaml: geo.regions.eu.continents: 'NA' is also in region 'us'" in _problems(data)
