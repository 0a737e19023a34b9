"""Abuse detection on real Redis with a fake clock: each pattern flags exactly at its threshold,
allowed clients never, two detectors sharing Redis count as one, bans and events follow."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest
import redis.asyncio as aioredis

from gatekeeper.abuse import Detector
from gatekeeper.abuse.component import build_detector
from gatekeeper.component import Context
from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.config import parse_config
from gatekeeper.identity.bans import BanList
from gatekeeper.limits import Limiter, storage_from_url
from gatekeeper.settings import Settings
from gatekeeper.testing import FakeClock
from tests.cluster import RedisClusterServers

Observe = Callable[[Detector, int], None]


class EventRecorder:
    """An in-memory EventEmitter: what was emitted, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], str | None]] = []

    def emit(self, type: str, data: Mapping[str, Any], *, subject: str | None = None) -> None:
        self.events.append((type, dict(data), subject))


class Replicas:
    """Detectors sharing one Redis and one key prefix, as replicas of one deployment do."""

    def __init__(self, url: str, prefix: str, clock: Any) -> None:
        self.url = url
        self.prefix = prefix
        self.clock = clock
        self.clients: list[Any] = []
        self.limiters: list[Limiter] = []

    def detector(
        self, abuse: dict[str, Any], events: EventRecorder | None = None, *, redis: bool = True
    ) -> Detector:
        client = aioredis.Redis.from_url(self.url) if redis else None
        storage = storage_from_url(
            self.url if redis else "memory://", prefix=self.prefix, clock=self.clock
        )
        limiter = Limiter(storage, clock=self.clock)
        if client is not None:
            self.clients.append(client)
        self.limiters.append(limiter)
        context = Context(settings=Settings(), clock=self.clock, redis=client, limiter=limiter)
        context.events = events
        config = parse_config({"abuse": abuse}).abuse
        return build_detector(context, config)

    async def close(self) -> None:
        for limiter in self.limiters:
            await limiter.aclose()
        for client in self.clients:
            await client.aclose()


@pytest.fixture
async def replicas(redis_url: str, redis_prefix: str) -> AsyncIterator[Replicas]:
    made = Replicas(redis_url, redis_prefix, FakeClock())
    yield made
    await made.close()


def _rule(pattern: str, threshold: int = 3, window: float = 60, **extra: Any) -> dict[str, Any]:
    """Only ``pattern`` enabled, at ``threshold`` within ``window``."""
    from gatekeeper.abuse import PATTERNS

    section: dict[str, Any] = {p: {"enabled": False, "threshold": 1, "window": 1} for p in PATTERNS}
    section[pattern] = {"threshold": threshold, "window": window}
    section.update(extra)
    return section


# How the i-th observation of each pattern looks (all from one subject).
OBSERVATIONS: dict[str, tuple[Observe, str]] = {
    "credential_stuffing_ip": (
        lambda d, i: d.login_failed("198.51.100.7", f"user{i}@example.com"),
        "ip:198.51.100.7",
    ),
    "credential_stuffing_account": (
        lambda d, i: d.login_failed(f"198.51.100.{i}", "victim@example.com"),
        "account:victim@example.com",
    ),
    "scanning": (
        lambda d, i: d.answered("203.0.113.9", f"/probe/{i}", 404, None),
        "ip:203.0.113.9",
    ),
    "retry_after_ignored": (lambda d, i: d.answered("203.0.113.9", "/api", 429, "k1"), "key:k1"),
    "keys_per_ip": (lambda d, i: d.answered("203.0.113.9", "/api", 200, f"k{i}"), "ip:203.0.113.9"),
    "networks_per_key": (lambda d, i: d.answered(f"192.0.{i}.1", "/api", 200, "k1"), "key:k1"),
}


@pytest.mark.parametrize("pattern", sorted(OBSERVATIONS))
async def test_each_pattern_flags_exactly_at_its_threshold(
    replicas: Replicas, pattern: str
) -> None:
    events = EventRecorder()
    detector = replicas.detector(_rule(pattern, threshold=4), events)
    observe, subject = OBSERVATIONS[pattern]
    for i in range(3):
        observe(detector, i)
        assert await detector.evaluate_pending() == [], f"flagged below the threshold at {i + 1}"
    assert await detector.flags.entries() == []
    observe(detector, 3)
    findings = await detector.evaluate_pending()
    assert [(f.pattern, f.subject, f.count) for f in findings] == [(pattern, subject, 4)]
    assert events.events == [
        (
            "abuse.detected",
            {
                "type": subject.partition(":")[0],
                "subject": subject,
                "pattern": pattern,
                "count": 4,
                "threshold": 4,
                "window": 60.0,
                "banned_for": 0.0,
            },
            subject,
        )
    ]
    [entry] = await detector.flags.entries()
    assert (entry["pattern"], entry["subject"], entry["count"]) == (pattern, subject, 4)
    # More of the same keeps it flagged without a second event.
    observe(detector, 4)
    assert await detector.evaluate_pending() == []
    assert len(events.events) == 1


async def test_distinct_patterns_count_distinct_members_only(replicas: Replicas) -> None:
    detector = replicas.detector(
        {**_rule("scanning", threshold=3), "networks_per_key": {"threshold": 2, "window": 60}}
    )
    for _ in range(5):  # one path again and again is not scanning
        detector.answered("203.0.113.9", "/missing", 404, None)
        await detector.evaluate_pending()
    for host in range(1, 6):  # one /24 is one network
        detector.answered(f"192.0.2.{host}", "/api", 200, "k1")
        await detector.evaluate_pending()
    detector.answered("2001:db8:0:1::1", "/api", 200, "k2")
    detector.answered("2001:db8:0:1::ffff", "/api", 200, "k2")  # (same /64)
    assert await detector.evaluate_pending() == []
    assert await detector.flags.entries() == []
    detector.answered("2001:db8:0:2::1", "/api", 200, "k2")
    assert [f.subject for f in await detector.evaluate_pending()] == ["key:k2"]


async def test_the_window_slides(replicas: Replicas) -> None:
    detector = replicas.detector(_rule("scanning", threshold=3, window=10))
    for i in range(2):
        detector.answered("203.0.113.9", f"/a{i}", 401, None)
    await detector.evaluate_pending()
    replicas.clock.advance(10.5)
    detector.answered("203.0.113.9", "/a2", 401, None)
    assert await detector.evaluate_pending() == []
    detector.answered("203.0.113.9", "/a3", 401, None)
    assert await detector.evaluate_pending() == []
    detector.answered("203.0.113.9", "/a4", 404, None)
    assert [f.count for f in await detector.evaluate_pending()] == [3]


async def test_allow_listed_clients_are_never_flagged(replicas: Replicas) -> None:
    from gatekeeper.abuse import PATTERNS

    section: dict[str, Any] = {p: {"threshold": 2, "window": 60} for p in PATTERNS}
    section["allow_networks"] = ["10.0.0.0/8", "2001:db8::/32"]
    section["allow_keys"] = ["trusted"]
    detector = replicas.detector(section)
    for i in range(20):
        detector.answered("10.1.2.3", f"/scan/{i}", 404, None)
        detector.answered("2001:db8::5", "/api", 429, None)
        detector.answered("10.1.2.3", "/api", 200, f"key{i}")
        detector.answered(f"198.51.{i}.1", "/api", 200, "trusted")
        detector.answered(f"198.51.{i}.1", "/api", 429, "trusted")
        detector.login_failed("10.9.9.9", f"u{i}@example.com")
    assert await detector.evaluate_pending() == []
    assert await detector.flags.entries() == []
    # The same behaviour from an address that is not allowed is flagged.
    for i in range(2):
        detector.answered("192.0.2.50", f"/scan/{i}", 404, None)
    assert [f.subject for f in await detector.evaluate_pending()] == ["ip:192.0.2.50"]


async def test_two_replicas_sharing_redis_count_as_one(replicas: Replicas) -> None:
    first_events, second_events = EventRecorder(), EventRecorder()
    first = replicas.detector(_rule("scanning", threshold=6), first_events)
    second = replicas.detector(_rule("scanning", threshold=6), second_events)
    for i in range(5):  # 5 distinct paths, alternating replicas: below the threshold
        (first if i % 2 else second).answered("203.0.113.77", f"/x/{i}", 404, None)
        assert await first.evaluate_pending() == []
        assert await second.evaluate_pending() == []
    second.answered("203.0.113.77", "/x/5", 404, None)
    assert [f.count for f in await second.evaluate_pending()] == [6]
    # The first replica sees the same list; more findings there are not new.
    first.answered("203.0.113.77", "/x/6", 404, None)
    assert await first.evaluate_pending() == []
    assert [e["subject"] for e in await first.flags.entries()] == ["ip:203.0.113.77"]
    assert len(first_events.events) + len(second_events.events) == 1
    # The sliding counters are shared too: 3 + 3 failed logins make 6.
    a = replicas.detector(_rule("credential_stuffing_ip", threshold=6))
    b = replicas.detector(_rule("credential_stuffing_ip", threshold=6))
    for i in range(3):
        a.login_failed("198.51.100.1", f"a{i}")
        b.login_failed("198.51.100.1", f"b{i}")
    assert await a.evaluate_pending() == []
    assert [f.subject for f in await b.evaluate_pending()] == ["ip:198.51.100.1"]


async def test_bans_when_configured_and_not_otherwise(
    replicas: Replicas, redis_url: str, redis_prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    replicas.clients.append(client)
    bans = BanList(client, replicas.clock, prefix=redis_prefix)
    events = EventRecorder()
    observing = replicas.detector(_rule("scanning", threshold=2))
    observing.bans = bans
    banning = replicas.detector(_rule("retry_after_ignored", threshold=2, ban=True), events)
    banning.bans = bans
    for i in range(2):
        observing.answered("192.0.2.1", f"/p{i}", 404, None)
        banning.answered("192.0.2.2", "/api", 429, "abc")
    assert len(await observing.evaluate_pending()) == 1
    assert len(await banning.evaluate_pending()) == 1
    assert await bans.remaining("ip:192.0.2.1") == 0
    assert await bans.remaining("key:abc") == 300  # the first offence: the base ban
    assert events.events[0][1]["banned_for"] == 300
    entries = {e["subject"]: e for e in await banning.flags.entries()}
    assert entries["key:abc"]["banned_for"] == 300
    # Still at it after the ban ran out (the flag is still listed): banned again, for longer.
    replicas.clock.advance(301)
    for _ in range(2):
        banning.answered("192.0.2.2", "/api", 429, "abc")
    assert len(await banning.evaluate_pending()) == 1
    assert await bans.remaining("key:abc") == 600
    assert [e[1]["banned_for"] for e in events.events] == [300, 600]
    # While banned, more findings neither ban again nor report.
    replicas.clock.advance(11)  # (past the replica's 10 s memory of recent findings)
    for _ in range(2):
        banning.answered("192.0.2.2", "/api", 429, "abc")
    assert await banning.evaluate_pending() == []
    assert await bans.remaining("key:abc") == 589


async def test_the_flagged_list_is_bounded_expires_and_clears(replicas: Replicas) -> None:
    detector = replicas.detector(
        {**_rule("scanning", threshold=1), "flag_ttl": 100, "max_flagged": 2}
    )
    for n in range(3):
        detector.answered(f"192.0.2.{n}", "/x", 404, None)
        await detector.evaluate_pending()
        replicas.clock.advance(1)
    listed = [e["subject"] for e in await detector.flags.entries()]
    assert listed == ["ip:192.0.2.2", "ip:192.0.2.1"]  # the oldest went first
    assert await detector.flags.clear("scanning", "ip:192.0.2.1")
    assert not await detector.flags.clear("scanning", "ip:192.0.2.1")
    replicas.clock.advance(100)
    assert await detector.flags.entries() == []


async def test_with_the_real_clock_redis_time_decides_the_windows(
    redis_url: str, redis_prefix: str
) -> None:
    from gatekeeper.types import SystemClock

    made = Replicas(redis_url, redis_prefix, SystemClock())
    try:
        first = made.detector(
            {
                **_rule("scanning", threshold=3),
                "retry_after_ignored": {"threshold": 3, "window": 60},
            }
        )
        second = made.detector(_rule("scanning", threshold=3))
        for i in range(2):
            first.answered("203.0.113.9", f"/p{i}", 404, None)
            first.answered("203.0.113.9", "/api", 429, None)
        assert await first.evaluate_pending() == []
        second.answered("203.0.113.9", "/p2", 404, None)
        first.answered("203.0.113.9", "/api", 429, None)
        assert [f.pattern for f in await second.evaluate_pending()] == ["scanning"]
        assert [f.pattern for f in await first.evaluate_pending()] == ["retry_after_ignored"]
    finally:
        await made.close()


async def test_a_stalled_redis_never_holds_the_detector(private_redis: Any) -> None:
    """Observing never waits; a batch the store does not answer is given up after the timeout
    (counted as an error) and detection resumes when the store is back."""
    replicas = Replicas(private_redis.url, "stall", FakeClock())
    try:
        detector = replicas.detector(_rule("scanning", threshold=3))
        detector.evaluate_timeout = 0.5
        detector.answered("203.0.113.9", "/warm", 404, None)
        assert await detector.evaluate_pending() == []  # (connections open, scripts loaded)
        private_redis.pause()
        try:
            for i in range(3):
                detector.answered("203.0.113.9", f"/p{i}", 404, None)  # returns at once
            assert await detector.evaluate_pending() == []
            assert detector.stats.errors == 1
        finally:
            private_redis.resume()
        for i in range(3, 6):
            detector.answered("203.0.113.9", f"/p{i}", 404, None)
        assert [f.subject for f in await detector.evaluate_pending()] == ["ip:203.0.113.9"]
    finally:
        await replicas.close()


async def test_without_redis_the_detector_counts_in_process(replicas: Replicas) -> None:
    detector = replicas.detector(_rule("scanning", threshold=3), redis=False)
    for i in range(3):
        detector.answered("203.0.113.9", f"/p{i}", 404, None)
        found = await detector.evaluate_pending()
    assert [f.subject for f in found] == ["ip:203.0.113.9"]
    assert len(await detector.flags.entries()) == 1


async def test_the_queue_is_bounded(replicas: Replicas) -> None:
    detector = replicas.detector({**_rule("scanning", threshold=100), "queue_max": 5})
    for i in range(8):
        detector.answered("203.0.113.9", f"/p{i}", 404, None)
    detector.answered("203.0.113.9", "/ok", 200, None)  # not an observation: never queued
    assert detector.stats.dropped == 3
    await detector.evaluate_pending()
    assert detector.stats.observed == 5


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"scanning": {"threshold": 0, "window": 60}}, "abuse.scanning.threshold"),
        ({"scanning": {"threshold": 5, "window": -1}}, "abuse.scanning.window"),
        ({"scanning": {"threshold": 5}}, "abuse.scanning.window"),
        ({"allow_networks": ["not-a-network"]}, "abuse.allow_networks.0"),
        ({"bogus": True}, "abuse.bogus"),
        ({"flag_ttl": 0}, "abuse.flag_ttl"),
        ({"ban": "sometimes"}, "abuse.ban"),
    ],
)
def test_invalid_abuse_sections_are_refused_naming_the_field(
    section: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_config({"abuse": section})
    assert problem in str(refused.value)


def test_defaults_observe_without_banning() -> None:
    from gatekeeper.abuse.component import rules_of

    config = parse_config({}).abuse
    assert config.enabled
    assert not config.ban
    rules = rules_of(config)
    assert len(rules) == 6
    assert not any(r.ban for r in rules.values())
    assert rules_of(parse_config({"abuse": {"ban": True}}).abuse)["scanning"].ban


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    """A private 3-master Redis Cluster for this module."""
    servers = RedisClusterServers()
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()


async def test_on_redis_cluster_two_detectors_count_as_one(cluster: RedisClusterServers) -> None:
    """Every script touches one slot (hash tags): counts, distinct counts and the flagged list
    work on a Cluster, exactly, across two detectors."""
    from redis.asyncio.cluster import RedisCluster

    from gatekeeper.types import SystemClock

    host, _, port = cluster.url.removeprefix("redis+cluster://").split(",")[0].partition(":")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    clock = SystemClock()
    made: list[tuple[Any, Limiter]] = []

    def detector(events: EventRecorder) -> Detector:
        client = RedisCluster(host=host, port=int(port))
        limiter = Limiter(storage_from_url(cluster.url, prefix=prefix, clock=clock), clock=clock)
        made.append((client, limiter))
        context = Context(settings=Settings(), clock=clock, redis=client, limiter=limiter)
        context.events = events
        section = {
            **_rule("scanning", threshold=4),
            "credential_stuffing_account": {"threshold": 4, "window": 60},
        }
        return build_detector(context, parse_config({"abuse": section}).abuse)

    first_events, second_events = EventRecorder(), EventRecorder()
    first, second = detector(first_events), detector(second_events)
    try:
        for i in range(3):
            # (Many subjects at once: their keys spread over the three nodes.)
            for n in range(12):
                (first if n % 2 else second).answered(f"192.0.2.{n}", f"/p{i}", 404, None)
            (second if i % 2 else first).login_failed(f"198.51.100.{i}", "victim@example.com")
            assert await first.evaluate_pending() == []
            assert await second.evaluate_pending() == []
        first.answered("192.0.2.5", "/p3", 404, None)
        second.login_failed("198.51.100.9", "victim@example.com")
        found = await first.evaluate_pending() + await second.evaluate_pending()
        assert sorted((f.pattern, f.subject) for f in found) == [
            ("credential_stuffing_account", "account:victim@example.com"),
            ("scanning", "ip:192.0.2.5"),
        ]
        listed = sorted(e["subject"] for e in await second.flags.entries())
        assert listed == ["account:victim@example.com", "ip:192.0.2.5"]
        assert len(first_events.events) + len(second_events.events) == 2
    finally:
        for client, limiter in made:
            await limiter.aclose()
            await client.aclose()
