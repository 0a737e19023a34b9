"""Prometheus metrics of several worker processes, aggregated by any one of them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

# Runs in its own interpreter: multiprocess mode is a process-wide switch of prometheus-client.
SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys
    from gatekeeper.observability.metrics import Metrics, enable_multiprocess

    def worker(n, depth, done):
        metrics = Metrics()
        for _ in range(n):
            metrics.request("api", 200, "backends", 0.003)
        metrics.decision("per-ip", "limited", n)
        for _ in range(n):
            metrics.geo_routed("geo", "eu-west", "eu", "located", False, 450.0)
        metrics.geo_routed("geo", "us-east", "eu", "located", True, 5900.0)
        metrics.queue_depth_set("backends", depth)
        metrics.endpoint_health("backends", "127.0.0.1:9", True)
        if done:
            metrics.close()  # an exited worker's live gauges disappear

    enable_multiprocess(sys.argv[1])
    ctx = multiprocessing.get_context("fork")
    for args in ((3, 2, False), (4, 5, False), (6, 100, True)):
        p = ctx.Process(target=worker, args=args)
        p.start()
        p.join()
        assert p.exitcode == 0
    sys.stdout.write(Metrics().render().decode())
    """
)


def test_workers_counts_add_up_and_dead_workers_gauges_vanish(tmp_path: Path) -> None:
    """Three workers' counters (geo routing's too) sum in one exposition; live gauges count
    live workers only."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "metrics")],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(result.stdout.decode()):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    ok = frozenset({("route", "api"), ("status", "200"), ("upstream", "backends")})
    assert values[("gatekeeper_http_requests_total", ok)] == 13
    limited = frozenset({("policy", "per-ip"), ("outcome", "limited")})
    assert values[("gatekeeper_ratelimit_decisions_total", limited)] == 13
    geo = frozenset({("route", "geo"), ("datacenter", "eu-west"), ("region", "eu")})
    assert values[("gatekeeper_geo_requests_total", geo)] == 13
    assert values[("gatekeeper_geo_lookups_total", frozenset({("result", "located")}))] == 16
    failover = frozenset({("route", "geo"), ("datacenter", "us-east")})
    assert values[("gatekeeper_geo_failovers_total", failover)] == 3
    far = frozenset({("route", "geo"), ("le", "4000.0")})
    assert values[("gatekeeper_geo_distance_kilometres_bucket", far)] == 13
    assert values[("gatekeeper_geo_distance_kilometres_count", frozenset({("route", "geo")}))] == 16
    # livesum: the two workers that did not call close() count (the third marked itself dead).
    assert values[("gatekeeper_admission_queue_depth", frozenset({("upstream", "backends")}))] == 7
    healthy = frozenset({("upstream", "backends"), ("endpoint", "127.0.0.1:9")})
    assert values[("gatekeeper_upstream_endpoint_healthy", healthy)] == 1
