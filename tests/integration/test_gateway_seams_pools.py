"""Pool wiring seams: pools write their metrics, and bad ``strategy``/``hash_on`` values are
listed at start-up with their field paths."""

from __future__ import annotations

import httpx
import pytest

from gatekeeper.gateway.config import ConfigFileError, parse_config
from tests.integration.gateway_fixtures import backends, config_for, running_gateway


async def test_pools_report_endpoint_health_to_the_metrics() -> None:
    """The gateway's pools get the process metrics: /metrics shows each endpoint's health."""
    async with backends(2) as started, running_gateway(config_for([b.url for b in started])) as gw:
        state = gw.runtime.snapshot
        assert state is not None
        assert state.pools["backends"].metrics is gw.runtime.metrics
        async with httpx.AsyncClient(base_url=gw.url) as http:
            text = (await http.get("/metrics")).text
        healthy = [
            line for line in text.splitlines()
            if line.startswith("gatekeeper_upstream_endpoint_healthy{")
        ]  # fmt: skip
        assert len(healthy) == 2
        assert all(line.endswith(" 1.0") for line in healthy)


def test_unknown_strategy_and_hash_on_are_listed_with_their_paths() -> None:
    """Both problems are reported together, each naming upstreams.<name>.<field>."""
    data = config_for(["http://127.0.0.1:9"])
    data["upstreams"]["backends"]["strategy"] = "fastest_please"
    data["upstreams"]["backends"]["hash_on"] = "body:x"
    with pytest.raises(ConfigFileError) as caught:
        parse_config(data, "gk.yaml")
    problems = caught.value.problems
    assert any(
        p.startswith("gk.yaml: upstreams.backends.strategy:") and "fastest_please" in p
        for p in problems
    ), problems
    assert any(p.startswith("gk.yaml: upstreams.backends.hash_on:") for p in problems), problems


def test_strategy_aliases_are_accepted() -> None:
    """A known strategy (any spelling the balancer accepts) and a header hash_on pass."""
    data = config_for(["http://127.0.0.1:9"])
    data["upstreams"]["backends"]["strategy"] = "least-connections"
    data["upstreams"]["backends"]["hash_on"] = "header:X-User"
    parse_config(data)
