"""The Redis Cluster store on a private cluster (3 masters, a replica each): splitting by
node, groups spanning nodes (reserve-then-compensate), stale slot maps and lost scripts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from gatekeeper.limits.policy import Algorithm, Check, Policy
from gatekeeper.limits.storage import MemoryStorage, storage_from_url
from gatekeeper.limits.storage.cluster import RedisClusterStorage
from tests.cluster import RedisClusterServers

pytestmark = pytest.mark.redis

NOW = 1_700_000_000_000_000


@pytest.fixture
def cluster(redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """The session's private cluster (3 masters, a replica each); tests use prefixes of
    their own."""
    return redis_cluster


@pytest.fixture
async def store(cluster: RedisClusterServers) -> AsyncIterator[RedisClusterStorage]:
    """A cluster store under a prefix of this test's own."""
    opened = storage_from_url(cluster.url, prefix=f"t{uuid.uuid4().hex[:10]}")
    assert isinstance(opened, RedisClusterStorage)
    await opened.ping()
    try:
        yield opened
    finally:
        await opened.aclose()


def subjects_on_two_nodes(store: RedisClusterStorage, policy: Policy) -> tuple[str, str]:
    """Two subjects whose keys live on different nodes."""
    first = "subject-0"
    node = store.client.get_node_from_key(Check(policy, first).storage_key_in(store.prefix))
    for i in range(1, 200):
        other = f"subject-{i}"
        key = Check(policy, other).storage_key_in(store.prefix)
        if store.client.get_node_from_key(key) is not node:
            return first, other
    raise AssertionError("every subject landed on one node")


@pytest.mark.parametrize("algorithm", list(Algorithm))
async def test_a_group_across_nodes_is_refunded_when_one_node_denies(
    store: RedisClusterStorage, algorithm: Algorithm
) -> None:
    """Reserve-then-compensate: the check on the first node is debited, the second node
    denies, and the first debit is given back, whatever the algorithm."""
    policy = Policy("spread", "3/minute", algorithm=algorithm, lease_ttl=60)
    gate = Policy("gate", "1/minute")
    a, b = subjects_on_two_nodes(store, policy)
    # Make node order irrelevant: exhaust the gate on b, then try a group of (a, b).
    await store.decide([[Check(gate, b)]], NOW)
    for first, second in ((a, b), (b, a)):
        if first == b:
            await store.decide([[Check(gate, a)]], NOW)
        group = [Check(policy, first, cost=2, lease_id="x"), Check(gate, second)]
        results = (await store.decide([group], NOW))[0]
        assert not results[1].allowed
        assert results[0].allowed
        assert results[0].remaining == 3
        peek = Check(policy, first, cost=3, peek=True, lease_id="y")
        assert (await store.decide([[peek]], NOW))[0][0].allowed


async def test_a_batch_across_nodes_matches_the_memory_store(store: RedisClusterStorage) -> None:
    """Groups on many subjects (several nodes) in one batch get the memory store's answers."""
    fast, slow = Policy("fast", "2/second"), Policy("slow", "4/minute", algorithm="sliding_log")
    memory = MemoryStorage()
    batch = [[Check(fast, f"ip-{i % 7}"), Check(slow, f"key-{i % 3}")] for i in range(40)]
    for t in range(3):
        expected = await memory.decide(batch, NOW + t * 400_000)
        assert await store.decide(batch, NOW + t * 400_000) == expected


async def test_a_stale_slot_map_is_refreshed_on_moved(store: RedisClusterStorage) -> None:
    """A slot map pointing at the wrong node gets MOVED; the store refreshes and decides once
    (no double debit)."""
    policy = Policy("moved", "5/minute")
    check = Check(policy, "wanderer")
    key = check.storage_key_in(store.prefix)
    right = store.client.get_node_from_key(key)
    wrong = next(n for n in store.client.get_primaries() if n is not right)
    slot = store.client.keyslot(key)
    store.client.nodes_manager.slots_cache[slot] = [wrong]
    result = (await store.decide([[check]], NOW))[0][0]
    assert result.remaining == 4
    assert store.client.get_node_from_key(key) is right
    assert (await store.decide([[check]], NOW))[0][0].remaining == 3


async def test_script_flush_on_every_node_is_recovered(store: RedisClusterStorage) -> None:
    """After SCRIPT FLUSH on every primary the store reloads the script per node."""
    policy = Policy("flush", "5/minute")
    batch = [[Check(policy, f"s{i}")] for i in range(12)]
    await store.decide(batch, NOW)
    for node in store.client.get_primaries():
        await node.execute_command("SCRIPT", "FLUSH")
    results = await store.decide(batch, NOW)
    assert all(g[0].remaining == 3 for g in results)
