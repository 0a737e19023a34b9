"""Unit tests of the live per-second statistics behind the dashboards (embedded store)."""

from __future__ import annotations

import pytest

from gatekeeper.observability.events import LiveStats, latency_bucket, percentile
from gatekeeper.observability.logging import AccessEntry, AccessLog, Termination
from gatekeeper.observability.metrics import Metrics
from gatekeeper.testing import FakeClock


def _entry(status: int = 200, seconds: float = 0.01, **kw: object) -> AccessEntry:
    fields: dict[str, object] = {
        "request_id": "r", "method": "GET", "path": "/api/info?key=secret",
        "client_ip": "10.0.0.1", "status": status, "duration": seconds, "route": "api",
        "upstream": "demo",
    }  # fmt: skip
    fields.update(kw)
    return AccessEntry(**fields)  # type: ignore[arg-type]


def _serve(live: LiveStats, entry: AccessEntry) -> None:
    """What the gateway does at the end of a request: count it, then log it."""
    live.request(entry.status, entry.upstream, entry.duration)
    live.record(entry)


def test_latency_buckets_grow_geometrically_and_percentiles_are_upper_bounds() -> None:
    """A latency lands in a bucket whose upper bound is within 25% above it."""
    for seconds in (0.0002, 0.001, 0.0123, 0.4, 3.0):
        upper = percentile({latency_bucket(seconds): 1}, 0.5)
        assert upper is not None
        assert seconds * 1000 <= upper <= seconds * 1000 * 1.25 + 1e-9
    assert latency_bucket(0.00001) == 0
    assert percentile({}, 0.5) is None
    assert percentile({0: 98, 10: 1, 20: 1}, 0.99) == percentile({10: 1}, 0.5)


async def test_rates_and_percentiles_use_the_complete_seconds() -> None:
    """Ten requests per second for five seconds give 10 rps; 429s count as limited."""
    clock = FakeClock(1_000.0)
    live = LiveStats(clock)
    for _ in range(5):
        for i in range(10):
            if i < 8:
                _serve(live, _entry(seconds=0.002))
            else:
                _serve(live, _entry(429, 0.0001, upstream=None, policy="per-ip"))
        clock.advance(1)
    _serve(live, _entry())  # the current, incomplete second: not in the rates
    await live.flush()
    snap = await live.snapshot()
    traffic = snap["traffic"]
    assert traffic["rps"] == 10
    assert traffic["allowed_rps"] == 8
    assert traffic["limited_rps"] == 2
    assert traffic["p50_ms"] == percentile({latency_bucket(0.002): 1}, 0.5)
    assert snap["totals"]["requests"] == 51
    assert snap["totals"]["terminations"] == {"--": 41, "RL": 10}
    assert snap["totals"]["status"] == {"2xx": 41, "4xx": 10}
    assert snap["top_limited_ips"] == [("10.0.0.1", 10)]
    assert snap["top_limited_keys"] == [("ip:10.0.0.1", 10)]
    assert snap["totals"]["upstreams"] == {"demo": 41}
    assert snap["replicas"] == 1
    assert [point["req"] for point in snap["series"][-5:]] == [10] * 5


async def test_recent_lines_are_newest_first_without_query_strings() -> None:
    """Access lines reach the snapshot newest first, with the query string dropped."""
    clock = FakeClock()
    live = LiveStats(clock)
    for i in range(3):
        live.record(_entry(request_id=f"r{i}"))
    await live.flush()
    lines = (await live.snapshot())["recent"]
    assert [line["id"] for line in lines] == ["r2", "r1", "r0"]
    assert lines[0]["path"] == "/api/info"
    assert lines[0]["term"] == "--"


async def test_metrics_forward_limiter_cache_queue_and_waiting_room_to_live() -> None:
    """With Metrics.live set, decisions, cache, queue depth and waiting-room numbers show up."""
    clock = FakeClock(5_000.0)
    live = LiveStats(clock)
    metrics = Metrics()
    metrics.live = live
    metrics.decision("per-ip", "limited", 3)
    metrics.decision("per-ip", "allowed", 5)
    metrics.degraded_decision("fail_open")
    metrics.cache("api", "hit")
    metrics.cache("api", "miss")
    metrics.queue_depth_set("demo", 4)
    metrics.waitingroom_length("shop", 30)
    metrics.waitingroom_admitted("shop", 6)
    metrics.waitingroom_abandoned("shop", 2)
    metrics.token_issued("shop")
    await live.flush()
    snap = await live.snapshot(seconds=3)
    assert snap["policies"] == {"per-ip": {"limited": 3, "allowed": 5}}
    assert snap["totals"]["degraded"] == {"fail_open": 1}
    assert snap["cache"] == {"hit": 1, "miss": 1, "hit_ratio": 0.5}
    assert snap["queues"] == {"demo": 4}
    room = snap["waiting_rooms"]["shop"]
    assert room["queue_length"] == 30
    assert room["admission_rate"] == 2.0  # 6 admitted over a 3 s window
    assert room["eta_seconds"] == 15.0
    assert room["abandon_ratio"] == 0.25
    assert room["tokens_issued"] == 1


async def test_metrics_request_and_access_log_sink_feed_live_stats() -> None:
    """Metrics.request counts the request; the AccessLog sink adds why it ended and the line."""
    live = LiveStats(FakeClock())
    metrics = Metrics()
    metrics.live = live
    access = AccessLog(enabled=False)
    access.add_sink(live.record)
    metrics.request("api", 503, "demo", 0.001)
    access.emit(_entry(503, termination=Termination.BREAKER_OPEN))
    await live.flush()
    snap = await live.snapshot()
    assert snap["totals"]["terminations"] == {"BO": 1}
    assert snap["totals"]["requests"] == 1
    assert snap["totals"]["errors"] == 1
    assert snap["recent"][0]["term"] == "BO"


async def test_a_failed_flush_keeps_the_increments() -> None:
    """If the store fails, the pending counts are kept and sent by the next flush."""

    class Flaky:
        def __init__(self, inner: object) -> None:
            self.inner = inner
            self.fail = True

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        async def add(self, *args: object, **kw: object) -> None:
            if self.fail:
                raise ConnectionError("down")
            await self.inner.add(*args, **kw)  # type: ignore[attr-defined]

    from gatekeeper.observability.live_store import MemoryLiveStore

    store = Flaky(MemoryLiveStore())
    live = LiveStats(FakeClock(), store)  # type: ignore[arg-type]
    _serve(live, _entry())
    with pytest.raises(ConnectionError):
        await live.flush()
    store.fail = False
    _serve(live, _entry())
    await live.flush()
    assert (await live.snapshot())["totals"]["requests"] == 2
