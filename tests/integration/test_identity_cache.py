"""The hot cache across replicas: two identity stacks (two Redis connections, one database)
see each other's changes within a second through Redis pub/sub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gatekeeper.errors import AuthenticationError, PermissionDenied
from gatekeeper.identity.cache import HotCache
from gatekeeper.identity.service import Identity
from gatekeeper.persistence import Database
from gatekeeper.redis_client import redis_from_url
from gatekeeper.testing import FakeClock
from tests.integration._identity_harness import PASSWORD, build_identity

pytestmark = pytest.mark.redis


@pytest.fixture
async def replicas(
    sql_database: Database, fake_clock: FakeClock, redis_prefix: str, any_redis_url: str
) -> AsyncIterator[tuple[Identity, Identity]]:
    """Two replicas: separate Redis clients and caches, the same SQL database; on one Redis
    and on a cluster (where the publisher and the subscriber may talk to different nodes)."""
    clients = [redis_from_url(any_redis_url) for _ in range(2)]
    stacks = [
        build_identity(sql_database, fake_clock, redis=c, redis_prefix=redis_prefix)
        for c in clients
    ]
    for stack in stacks:
        await stack.start()
    try:
        yield stacks[0], stacks[1]
    finally:
        for stack in stacks:
            await stack.stop()
        for client in clients:
            await client.aclose()


async def _within(seconds: float, probe: Callable[[], Awaitable[bool]]) -> float:
    """How long until ``probe`` holds (fails the test after ``seconds``)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await probe():
            return time.monotonic() - started
        await asyncio.sleep(0.005)
    raise AssertionError(f"not propagated within {seconds} s")


async def _user_key(identity: Identity, email: str) -> tuple[str, str]:
    user = await identity.users.register(email, PASSWORD)
    key = await identity.api_keys.create(user.id, "k")
    return user.id, key.secret


async def test_tier_upgrade_reaches_the_other_replica_within_a_second(
    replicas: tuple[Identity, Identity],
) -> None:
    """Replica A caches a key's principal; replica B upgrades the tier; A sees it < 1 s."""
    a, b = replicas
    user_id, secret = await _user_key(a, "cache1@example.com")
    assert (await a.api_keys.resolve(secret)).tier == "free"
    assert a.cache.size("apikey") == 1
    await b.users.update(user_id, tier="premium")

    async def upgraded() -> bool:
        return (await a.api_keys.resolve(secret)).tier == "premium"

    assert await _within(1.0, upgraded) < 1.0


async def test_blocked_key_and_edited_tier_propagate(replicas: tuple[Identity, Identity]) -> None:
    """A block on B makes the key 403 on A; a tier edit on B changes A's policies; both < 1 s."""
    a, b = replicas
    _, secret = await _user_key(a, "cache2@example.com")
    principal = await a.api_keys.resolve(secret)
    assert [p.rate.limit for p in await a.tiers.policies("free")] == [5]
    key = await b.api_keys.find(secret)
    await b.api_keys.set_blocked(key.id, True)
    await b.tiers.put("free", [{"rate": "7/minute"}])

    async def blocked() -> bool:
        try:
            await a.api_keys.resolve(secret)
        except PermissionDenied:
            return True
        return False

    async def edited() -> bool:
        return [p.rate.limit for p in await a.tiers.policies("free")] == [7]

    await _within(1.0, blocked)
    await _within(1.0, edited)
    assert principal.tier == "free"


async def test_ip_deny_and_revocation_propagate(replicas: tuple[Identity, Identity]) -> None:
    """An IP deny and a key revocation made on B apply on A within a second."""
    a, b = replicas
    _, secret = await _user_key(a, "cache3@example.com")
    assert await a.ip_rules.match("203.0.113.9") is None
    await a.api_keys.resolve(secret)
    await b.ip_rules.add("203.0.113.0/24", "deny")
    await b.api_keys.revoke((await b.api_keys.find(secret)).id)

    async def denied() -> bool:
        return await a.ip_rules.match("203.0.113.9") == "deny"

    async def revoked() -> bool:
        try:
            await a.api_keys.resolve(secret)
        except AuthenticationError:
            return True
        return False

    await _within(1.0, denied)
    await _within(1.0, revoked)


async def test_without_redis_only_the_ttl_bounds_staleness(
    sql_database: Database, fake_clock: FakeClock
) -> None:
    """Embedded mode: another process's change is seen once the entry's TTL has passed."""
    a = build_identity(sql_database, fake_clock)
    b = build_identity(sql_database, fake_clock)
    user_id, secret = await _user_key(a, "cache4@example.com")
    assert (await a.api_keys.resolve(secret)).tier == "free"
    await b.users.update(user_id, tier="basic")
    assert (await a.api_keys.resolve(secret)).tier == "free"  # stale, as designed
    fake_clock.advance(a.cache.ttl + 0.1)
    assert (await a.api_keys.resolve(secret)).tier == "basic"


async def test_a_load_racing_an_invalidation_is_not_cached() -> None:
    """A value loaded before an invalidation but stored after it is not kept."""
    cache = HotCache(clock=FakeClock())
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_load() -> str:
        started.set()
        await release.wait()
        return "old"

    task = asyncio.create_task(cache.get_or_load("ns", "k", slow_load))
    await started.wait()
    await cache.invalidate("ns", "k")
    release.set()
    assert await task == "old"

    async def fresh() -> str:
        return "new"

    assert await cache.get_or_load("ns", "k", fresh) == "new"


async def test_concurrent_misses_share_one_load_of_the_current_generation() -> None:
    """Requests that miss while a key loads wait for that load (one SQL read, not one per
    request in flight); one arriving after an invalidation loads afresh; a failed load leaves
    its waiters to load on their own."""
    cache = HotCache(clock=FakeClock())
    release = asyncio.Event()
    loads: list[str] = []

    def loader(value: str, fail: bool = False) -> Callable[[], Awaitable[str]]:
        async def load() -> str:
            loads.append(value)
            await release.wait()
            if fail:
                raise RuntimeError("database down")
            return value

        return load

    first = [asyncio.create_task(cache.get_or_load("ns", "k", loader("v1"))) for _ in range(20)]
    await asyncio.sleep(0)
    assert loads == ["v1"]
    cache.drop("ns")  # an invalidation while it loads: newcomers do not share the old load
    late = asyncio.create_task(cache.get_or_load("ns", "k", loader("v2")))
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*first) == ["v1"] * 20
    assert await late == "v2"
    assert loads == ["v1", "v2"]
    release.clear()
    cache.drop("ns")
    failing = asyncio.create_task(cache.get_or_load("ns", "k", loader("x", fail=True)))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(cache.get_or_load("ns", "k", loader("v3")))
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(RuntimeError):
        await failing
    assert await waiter == "v3"


async def test_listener_survives_garbage_messages(redis_prefix: str, any_redis_url: str) -> None:
    """Malformed messages on the channel are ignored; a valid one still invalidates."""
    client = redis_from_url(any_redis_url)
    publisher = redis_from_url(any_redis_url)
    channel = f"{redis_prefix}:inv"
    cache = HotCache(client, channel=channel, clock=FakeClock())
    await cache.start()
    try:

        async def one() -> int:
            return 1

        await cache.get_or_load("ns", "k", one)
        await cache.get_or_load("ns", "other", one)
        for junk in (b"not json", b'{"ns": 1}', b"[]"):
            await publisher.publish(channel, junk)
        await publisher.publish(channel, b'{"ns": "ns", "key": "k"}')

        async def dropped() -> bool:
            return cache.size("ns") < 2

        await _within(1.0, dropped)
        # Only "k" went: the listener neither crashed nor reconnected (which clears all).
        assert cache.size("ns") == 1
        assert cache.invalidations_received == 1
    finally:
        await cache.stop()
        await client.aclose()
        await publisher.aclose()
