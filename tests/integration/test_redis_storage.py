"""The Redis store against real servers: scripts, TTLs, restarts, failures, Sentinel."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gatekeeper.errors import StorageError, StorageTimeout
from gatekeeper.limits.policy import Algorithm, Check, Policy
from gatekeeper.limits.storage import storage_from_url
from tests import services
from tests.servers import RedisServer, free_port, tool, wait_for_port

pytestmark = pytest.mark.redis

NOW = 1_700_000_000_000_000


@pytest.mark.parametrize("algorithm", list(Algorithm))
async def test_every_key_gets_a_ttl_until_its_state_resets(
    redis_prefix: str, algorithm: Algorithm
) -> None:
    """After a debit (Redis time), the key exists under {prefix}:{subject}:policy with a TTL
    no longer than the reported reset_after."""
    store = storage_from_url(services.redis_url(), prefix=redis_prefix)
    client = aioredis.Redis.from_url(services.redis_url())
    try:
        check = Check(Policy("ttl", "5/10s", algorithm=algorithm), "ip:1", lease_id="l")
        result = (await store.decide([[check]]))[0][0]
        key = f"{redis_prefix}:{{ip:1}}:ttl"
        assert check.storage_key_in(redis_prefix) == key
        ttl_ms = await client.pttl(key)
        assert 0 < ttl_ms <= result.reset_after * 1000 + 1
        assert ttl_ms > result.reset_after * 1000 - 2000
    finally:
        await client.aclose()
        await store.aclose()


async def test_keys_decided_at_a_given_time_live_at_least_a_minute(redis_prefix: str) -> None:
    """With now_us supplied (tests, replays) Redis's clock is not the state's, so the TTL is
    stretched to a minute instead of expiring under the caller's feet."""
    store = storage_from_url(services.redis_url(), prefix=redis_prefix)
    client = aioredis.Redis.from_url(services.redis_url())
    try:
        check = Check(Policy("short", "5/second"), "k")
        await store.decide([[check]], NOW)
        assert 59_000 < await client.pttl(check.storage_key_in(redis_prefix)) <= 60_000
    finally:
        await client.aclose()
        await store.aclose()


async def test_a_batch_is_one_evalsha(private_redis: RedisServer) -> None:
    """100 groups of two checks travel as one EVALSHA call."""
    store = storage_from_url(private_redis.url)
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        a, b = Policy("a", "10/second"), Policy("b", "1/minute", algorithm="sliding_log")
        await store.decide([[Check(a, "warm")]], NOW)
        await client.config_resetstat()
        batch = [[Check(a, f"s{i}"), Check(b, f"s{i}")] for i in range(100)]
        results = await store.decide(batch, NOW)
        assert all(r.allowed for group in results for r in group)
        stats = await client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1
    finally:
        await client.aclose()
        await store.aclose()


async def test_script_flush_is_recovered_by_reloading(private_redis: RedisServer) -> None:
    """After SCRIPT FLUSH the store gets NOSCRIPT, loads the script again and goes on."""
    store = storage_from_url(private_redis.url)
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        check = Check(Policy("flush", "3/minute"), "k")
        assert (await store.decide([[check]], NOW))[0][0].remaining == 2
        await client.script_flush()
        assert (await store.decide([[check]], NOW))[0][0].remaining == 1
    finally:
        await client.aclose()
        await store.aclose()


async def test_limiter_batches_sent_without_a_task_recover_from_script_flush(
    private_redis: RedisServer,
) -> None:
    """The limiter's callback path (decide_soon/settle) meets NOSCRIPT after SCRIPT FLUSH,
    resends the batch through the store's decide (which loads the script) and debits once."""
    from gatekeeper.limits import Limiter

    limiter = Limiter(storage_from_url(private_redis.url), deadline=1.0)
    client = aioredis.Redis.from_url(private_redis.url)
    policy = Policy("flush-fast", "10/minute")
    try:
        first = await asyncio.gather(*(limiter.hit(policy, "k") for _ in range(4)))
        assert sorted(d.remaining for d in first) == [6, 7, 8, 9]
        await client.script_flush()
        again = await asyncio.gather(*(limiter.hit(policy, "k") for _ in range(4)))
        assert sorted(d.remaining for d in again) == [2, 3, 4, 5]  # each hit debited once
        assert not any(d.degraded for d in first + again)
        assert limiter.stats.storage_errors == 0
    finally:
        await client.aclose()
        await limiter.aclose()


async def test_a_store_without_an_open_connection_takes_the_task_path(
    private_redis: RedisServer,
) -> None:
    """decide_soon answers None until the lean connection is open: the first batch goes
    through decide (which opens it), the next ones through the callback path."""
    store = storage_from_url(private_redis.url)
    try:
        check = Check(Policy("soon", "5/minute"), "k")
        assert store.decide_soon([[check]], NOW) is None  # type: ignore[attr-defined]
        await store.decide([[check]], NOW)
        reply = store.decide_soon([[check]], NOW)  # type: ignore[attr-defined]
        assert reply is not None
        results = store.settle([[check]], await reply)  # type: ignore[attr-defined]
        assert results[0][0].remaining == 3
    finally:
        await store.aclose()


async def test_decisions_resume_after_a_redis_restart(private_redis: RedisServer) -> None:
    """A restarted Redis (empty, no scripts) serves the next decisions; at most the first
    call on a dead connection fails, as a StorageError."""
    store = storage_from_url(private_redis.url)
    try:
        check = Check(Policy("restart", "3/minute"), "k")
        await store.decide([[check]], NOW)
        private_redis.restart()
        try:
            await store.decide([[check]], NOW)
        except StorageError:
            pass
        assert (await store.decide([[check]], NOW))[0][0].allowed
    finally:
        await store.aclose()


async def test_a_dead_redis_raises_storage_error(private_redis: RedisServer) -> None:
    """A killed Redis surfaces as StorageError with redis-py's error as the cause."""
    store = storage_from_url(private_redis.url + "?socket_connect_timeout=0.5")
    try:
        private_redis.kill()
        with pytest.raises(StorageError) as caught:
            await store.decide([[Check(Policy("dead", "1/second"), "k")]], NOW)
        assert caught.value.__cause__ is not None
        with pytest.raises(StorageError):
            await store.ping()
    finally:
        await store.aclose()


async def test_a_paused_redis_raises_storage_timeout(private_redis: RedisServer) -> None:
    """A Redis that does not answer within socket_timeout surfaces as StorageTimeout."""
    store = storage_from_url(private_redis.url + "?socket_timeout=0.1")
    try:
        await store.ping()
        private_redis.pause()
        with pytest.raises(StorageTimeout):
            await store.decide([[Check(Policy("paused", "1/second"), "k")]], NOW)
    finally:
        private_redis.resume()
        await store.aclose()


class _Sentinel:
    """A redis-server in Sentinel mode watching one master."""

    def __init__(self, master_port: int, *settings: str) -> None:
        binary = tool("redis-server")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gk-sentinel-"))
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor gkmaster 127.0.0.1 {master_port} 1\n"
            + "".join(f"sentinel {line}\n" for line in settings)
        )
        self.process = subprocess.Popen(
            [binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sentinel(private_redis: RedisServer) -> Iterator[_Sentinel]:
    server = _Sentinel(private_redis.port)
    try:
        yield server
    finally:
        server.stop()


async def test_sentinel_url_finds_the_master(sentinel: _Sentinel) -> None:
    """redis+sentinel://host:port/service asks Sentinel for the master and decides there."""
    store = storage_from_url(f"redis+sentinel://127.0.0.1:{sentinel.port}/gkmaster?db=0")
    try:
        deadline = time.monotonic() + 10
        check = Check(Policy("sentinel", "2/minute"), "k")
        while True:
            try:
                results = await store.decide([[check], [check], [check]], NOW)
                break
            except StorageError:
                # Sentinel needs a moment to learn about its master after it starts.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        assert [g[0].allowed for g in results] == [True, True, False]
    finally:
        await store.aclose()


@pytest.mark.slow
async def test_decisions_survive_a_sentinel_failover(private_redis: RedisServer) -> None:
    """Kill the master: Sentinel promotes the replica, the store follows it, reloads its
    script there (NOSCRIPT) and the replicated state carries on."""
    replica = RedisServer(None, "--replicaof", "127.0.0.1", str(private_redis.port))
    replica.start()
    watcher = _Sentinel(
        private_redis.port,
        "down-after-milliseconds gkmaster 300",
        "failover-timeout gkmaster 2000",
    )
    url = f"redis+sentinel://127.0.0.1:{watcher.port}/gkmaster?socket_timeout=0.5"
    store = storage_from_url(url)
    check = Check(Policy("failover", "5/hour"), "k")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                first = (await store.decide([[check]], NOW))[0][0]
                break
            except StorageError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        assert first.remaining == 4
        replicated = aioredis.Redis.from_url(replica.url)
        try:
            key = check.storage_key_in("gk")
            while not await replicated.exists(key):
                assert time.monotonic() < deadline, "the replica never caught up"
                await asyncio.sleep(0.02)
        finally:
            await replicated.aclose()
        private_redis.kill()
        deadline = time.monotonic() + 30
        while True:
            try:
                after = (await store.decide([[check]], NOW))[0][0]
                break
            except StorageError:
                # Until Sentinel has noticed and promoted the replica.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert after.remaining == 3
    finally:
        await store.aclose()
        watcher.stop()
        replica.stop()
