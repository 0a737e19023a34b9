"""The Redis-backed identity state (bans, usage, revocations, request log) behaves exactly like
the in-process one, and is shared by every replica."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gatekeeper.errors import StorageError
from gatekeeper.identity.bans import BanList, BanRules
from gatekeeper.identity.sessions import RevocationList
from gatekeeper.identity.usage import RequestLog, UsageCounters
from gatekeeper.persistence import Database
from gatekeeper.redis_client import redis_from_url
from gatekeeper.testing import FakeClock
from tests.integration._identity_harness import PASSWORD, build_app, build_identity

pytestmark = pytest.mark.redis


@pytest.fixture
async def redis(any_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of each Redis deployment in turn: one server, then a cluster."""
    client = redis_from_url(any_redis_url)
    yield client
    await client.aclose()


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
async def test_progressive_bans_are_the_same_in_memory_and_in_redis(
    redis: aioredis.Redis, redis_prefix: str, fake_clock: FakeClock, shared: bool
) -> None:
    """300 s, 600 s, then back to 300 s after the decay period, on both back ends."""
    rules = BanRules(threshold=2, window=60, base=300, multiplier=2, decay=1000)
    bans = BanList(redis if shared else None, fake_clock, rules, prefix=redis_prefix)
    durations = []
    for pause in (301, 601 + 1001):
        await bans.violation("key:k")
        durations.append(await bans.violation("key:k"))
        assert await bans.remaining("key:k") == pytest.approx(durations[-1])
        fake_clock.advance(pause)
    await bans.violation("key:k")
    durations.append(await bans.violation("key:k"))
    assert durations == [300, 600, 300]


async def test_a_ban_made_on_one_replica_holds_on_another(
    redis: aioredis.Redis, redis_prefix: str, fake_clock: FakeClock
) -> None:
    """Violations counted by two replicas add up; the ban is visible to both."""
    rules = BanRules(threshold=4)
    one = BanList(redis, fake_clock, rules, prefix=redis_prefix)
    two = BanList(redis, fake_clock, rules, prefix=redis_prefix)
    assert [await r.violation("ip:9.9.9.9") for r in (one, two, one)] == [0, 0, 0]
    assert await two.violation("ip:9.9.9.9") == 300
    assert await one.remaining("ip:9.9.9.9") == pytest.approx(300)
    await one.lift("ip:9.9.9.9")
    assert await two.remaining("ip:9.9.9.9") == 0


async def test_usage_and_request_log_are_shared(
    redis: aioredis.Redis, redis_prefix: str, fake_clock: FakeClock
) -> None:
    """Usage recorded by two replicas sums in one history; the request log is common."""
    a = UsageCounters(redis, fake_clock, prefix=redis_prefix)
    b = UsageCounters(redis, fake_clock, prefix=redis_prefix)
    await a.record("key:x", allowed=True)
    await b.record("key:x", allowed=True)
    await b.record("key:x", allowed=False)
    day = await a.history("key:x", "day", 1)
    assert (day[0]["requests"], day[0]["denied"]) == (2, 1)
    log_a = RequestLog(redis, fake_clock, prefix=redis_prefix, size=2)
    log_b = RequestLog(redis, fake_clock, prefix=redis_prefix, size=2)
    await log_a.append(n=1)
    await log_b.append(n=2)
    await log_a.append(n=3)
    assert [e["n"] for e in await log_b.recent()] == [3, 2]


async def test_revocations_expire_with_the_tokens(
    redis: aioredis.Redis, redis_prefix: str, fake_clock: FakeClock
) -> None:
    """A revoked id stays revoked until its 'until' time on the injected clock."""
    revoked = RevocationList(redis, fake_clock, prefix=redis_prefix)
    await revoked.revoke("fam:f1", fake_clock.now() + 60)
    assert await revoked.any_revoked("jti:x", "fam:f1")
    assert not await revoked.any_revoked("jti:x", "fam:f2")
    fake_clock.advance(61)
    assert not await revoked.any_revoked("fam:f1")


async def test_a_redis_that_does_not_answer_is_a_503_not_a_500(
    sql_database: Database, fake_clock: FakeClock
) -> None:
    """With Redis down (or a cluster node dead), bans and revocations raise StorageError, which
    answers 503 ``storage_unavailable``: an anonymous ``/sdk/check`` and a bearer request are
    never a 500; usage counting and the request log (bookkeeping) do not fail anything."""
    dead = aioredis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    try:
        with pytest.raises(StorageError):
            await BanList(dead, fake_clock).remaining("ip:1.2.3.4")
        with pytest.raises(StorageError):
            await RevocationList(dead, fake_clock).any_revoked("jti:x", "fam:y")
        await UsageCounters(dead, fake_clock).record("key:k", allowed=True)
        await RequestLog(dead, fake_clock).append(kind="check")
        identity = build_identity(sql_database, fake_clock, redis=dead)
        transport = httpx.ASGITransport(app=build_app(identity), client=("198.51.100.7", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://gk.test") as http:
            check = await http.post("/sdk/check", json={})
            assert check.status_code == 503, check.text
            assert check.json()["error"] == "storage_unavailable"
            registered = await http.post(
                "/auth/register", json={"email": "d@example.com", "password": PASSWORD}
            )
            assert registered.status_code == 201, registered.text  # SQL only
            bearer = {"Authorization": f"Bearer {registered.json()['access_token']}"}
            me = await http.get("/auth/me", headers=bearer)  # the revocation check: Redis
            assert me.status_code == 503, me.text
    finally:
        await dead.aclose()
