"""Unit tests of the Prometheus metric definitions and their recording API."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gatekeeper.errors import ConfigurationError
from gatekeeper.observability.metrics import Metrics
from tests.servers import tool


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _exercise(metrics: Metrics) -> None:
    metrics.request("api", 200, "pool-a", 0.004)
    metrics.request("api", 200, "pool-a", 0.3)
    metrics.request("api", 429, None, 0.0005)
    metrics.request_started()
    metrics.upstream_attempt("pool-a", "127.0.0.1:9001", "ok", 0.002)
    metrics.upstream_attempt("pool-a", "127.0.0.1:9002", "timeout", 1.0, retry=True)
    metrics.decision("per-ip", "allowed", 2)
    metrics.decision("per-ip", "limited")
    metrics.degraded_decision("fail_open", policy="per-ip")
    metrics.store_call("redis", 0.0007)
    metrics.endpoint_health("pool-a", "127.0.0.1:9002", False)
    metrics.ejection("pool-a", "127.0.0.1:9002")
    metrics.breaker("pool-a", "127.0.0.1:9002", "open")
    metrics.queue_depth_set("pool-a", 7)
    metrics.queue_waited("pool-a", 0.2)
    metrics.queue_waited("pool-a", 5.0, rejected="timeout")
    metrics.cache("api", "hit")
    metrics.cache("api", "stale")
    metrics.waitingroom_length("shop", 12)
    metrics.waitingroom_admitted("shop", 3)
    metrics.waitingroom_abandoned("shop")
    metrics.token_issued("shop")
    metrics.token_verified("shop", "valid")


def test_every_metric_is_prefixed_and_documented() -> None:
    """Every exported family has the gatekeeper_ prefix and a help text."""
    metrics = Metrics()
    _exercise(metrics)
    families = list(text_string_to_metric_families(metrics.render().decode()))
    assert len(families) >= 22
    for family in families:
        assert family.name.startswith("gatekeeper_"), family.name
        assert family.documentation, family.name


def test_request_counts_by_route_status_upstream_and_observes_latency() -> None:
    """request() counts per (route, status, upstream) and fills the route's latency histogram."""
    metrics = Metrics()
    _exercise(metrics)
    s = _samples(metrics)
    ok = (("route", "api"), ("status", "200"), ("upstream", "pool-a"))
    assert s[("gatekeeper_http_requests_total", ok)] == 2
    limited = (("route", "api"), ("status", "429"), ("upstream", "none"))
    assert s[("gatekeeper_http_requests_total", limited)] == 1
    assert s[("gatekeeper_http_request_duration_seconds_count", (("route", "api"),))] == 3
    le_5ms = (("le", "0.005"), ("route", "api"))
    assert s[("gatekeeper_http_request_duration_seconds_bucket", le_5ms)] == 2
    assert s[("gatekeeper_http_requests_in_flight", ())] == 1


def test_resilience_limiter_cache_and_waiting_room_values() -> None:
    """The typed methods land on the documented names with the given labels and values."""
    metrics = Metrics()
    _exercise(metrics)
    s = _samples(metrics)
    ep = (("endpoint", "127.0.0.1:9002"), ("upstream", "pool-a"))
    assert s[("gatekeeper_upstream_breaker_state", ep)] == 2
    assert s[("gatekeeper_upstream_endpoint_healthy", ep)] == 0
    assert s[("gatekeeper_upstream_ejections_total", ep)] == 1
    assert s[("gatekeeper_upstream_retries_total", (("upstream", "pool-a"),))] == 1
    assert (
        s[("gatekeeper_ratelimit_decisions_total", (("outcome", "allowed"), ("policy", "per-ip")))]
        == 2
    )
    key = (("mode", "fail_open"), ("policy", "per-ip"))
    assert s[("gatekeeper_ratelimit_degraded_decisions_total", key)] == 1
    assert s[("gatekeeper_admission_queue_depth", (("upstream", "pool-a"),))] == 7
    rej = (("reason", "timeout"), ("upstream", "pool-a"))
    assert s[("gatekeeper_admission_rejections_total", rej)] == 1
    assert s[("gatekeeper_cache_lookups_total", (("result", "stale"), ("route", "api")))] == 1
    assert s[("gatekeeper_waitingroom_queue_length", (("tenant", "shop"),))] == 12
    assert s[("gatekeeper_waitingroom_admissions_total", (("tenant", "shop"),))] == 3
    valid = (("outcome", "valid"), ("tenant", "shop"))
    assert s[("gatekeeper_waitingroom_tokens_verified_total", valid)] == 1


def test_two_instances_do_not_share_state() -> None:
    """Each Metrics owns its registry: two apps in one process count separately."""
    a, b = Metrics(), Metrics(CollectorRegistry())
    a.request("r", 200, "u", 0.01)
    assert (
        "gatekeeper_http_requests_total",
        (("route", "r"), ("status", "200"), ("upstream", "u")),
    ) not in _samples(b)


def test_unknown_breaker_state_is_a_configuration_error() -> None:
    """A breaker state outside closed/half_open/open is rejected with a message naming it."""
    with pytest.raises(ConfigurationError, match="sideways"):
        Metrics().breaker("p", "e", "sideways")


def test_exposition_passes_promtool(tmp_path: object) -> None:
    """`promtool check metrics` accepts the exposition (names, units, help, types)."""
    promtool = tool("promtool")
    metrics = Metrics()
    _exercise(metrics)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=metrics.render(), capture_output=True, timeout=30
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
