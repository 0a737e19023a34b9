"""The memory store's bounds (entries, bytes, object size) and TTLs; the cache's configuration."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.cache.config import (
    RouteCache,
    build_cache,
    parse_cache_config,
    route_cache,
)
from gatekeeper.gateway.cache.entry import CacheEntry
from gatekeeper.gateway.cache.memory import MemoryStore
from gatekeeper.gateway.cache.options import CacheOptions
from gatekeeper.gateway.cache.store import store_from_url
from gatekeeper.testing import FakeClock


def entry(body: bytes = b"x") -> CacheEntry:
    return CacheEntry(200, [], body, 0.0, 0.0)


async def test_lru_evicts_least_recently_used_past_max_entries(fake_clock: FakeClock) -> None:
    """With max_entries=2, touching a key protects it; the other one is evicted."""
    store = MemoryStore(clock=fake_clock, max_entries=2)
    await store.set("a", "", entry(), 60)
    await store.set("b", "", entry(), 60)
    assert await store.get("a", "") is not None  # a is now the most recent
    await store.set("c", "", entry(), 60)
    assert await store.get("b", "") is None
    assert await store.get("a", "") is not None
    assert store.evictions == 1


async def test_total_bytes_bound(fake_clock: FakeClock) -> None:
    """Stored bytes never exceed max_total_bytes: older entries are evicted."""
    store = MemoryStore(clock=fake_clock, max_entry_bytes=5_000, max_total_bytes=10_000)
    for i in range(10):
        await store.set(str(i), "", entry(b"z" * 3_000), 60)
        assert store.total_bytes <= 10_000
    assert len(store) == 3
    assert await store.get("9", "") is not None
    assert await store.get("0", "") is None


async def test_entry_bigger_than_bound_is_refused(fake_clock: FakeClock) -> None:
    """An entry over max_entry_bytes is not stored and evicts nothing."""
    store = MemoryStore(clock=fake_clock, max_entry_bytes=1_000)
    await store.set("small", "", entry(), 60)
    assert not await store.set("big", "", entry(b"z" * 2_000), 60)
    assert await store.get("small", "") is not None
    assert await store.get("big", "") is None


async def test_records_expire_after_their_ttl(fake_clock: FakeClock) -> None:
    """Entries and vary indexes disappear once their TTL passes on the store's clock."""
    store = MemoryStore(clock=fake_clock)
    await store.set("k", "v1", entry(), 10)
    await store.set_vary("k", ("accept",), 10)
    fake_clock.advance(9.9)
    assert await store.get("k", "v1") is not None
    assert await store.get_vary("k") == ("accept",)
    fake_clock.advance(0.2)
    assert await store.get("k", "v1") is None
    assert await store.get_vary("k") is None
    assert store.total_bytes == 0


async def test_delete_forgets_the_vary_index(fake_clock: FakeClock) -> None:
    """delete() drops the primary key's index, so its variants are no longer found."""
    store = MemoryStore(clock=fake_clock)
    await store.set_vary("k", (), 10)
    await store.delete("k")
    assert await store.get_vary("k") is None


def test_bad_bounds_are_configuration_errors(fake_clock: FakeClock) -> None:
    """Zero or negative bounds are refused with a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        MemoryStore(clock=fake_clock, max_entries=0)
    with pytest.raises(ConfigurationError, match="max_object_bytes"):
        CacheOptions(max_object_bytes=0)
    with pytest.raises(ConfigurationError, match="name"):
        CacheOptions(name="two words")


def test_store_from_url(fake_clock: FakeClock) -> None:
    """memory:// gives the memory store; an unknown scheme names the problem."""
    assert isinstance(
        store_from_url("memory://", clock=fake_clock, max_entry_bytes=10), MemoryStore
    )
    with pytest.raises(ConfigurationError, match="unknown scheme"):
        store_from_url("mongo://x", clock=fake_clock, max_entry_bytes=10)


def test_config_lists_every_bad_field() -> None:
    """A bad cache: section names each offending field with its path."""
    with pytest.raises(ConfigurationError) as info:
        parse_cache_config({"store": "disk", "max_object_bytes": -1, "colour": "red"})
    text = str(info.value)
    assert "cache.store" in text
    assert "cache.max_object_bytes" in text
    assert "cache.colour" in text


def test_config_builds_memory_cache_and_refuses_redis_without_client(
    fake_clock: FakeClock,
) -> None:
    """The default config builds a memory cache; store: redis without Redis is refused."""
    cache = build_cache(parse_cache_config({"max_object_bytes": 1000}), clock=fake_clock)
    assert isinstance(cache.store, MemoryStore)
    assert cache.options.max_object_bytes == 1000
    with pytest.raises(ConfigurationError, match="GATEKEEPER_REDIS_URL"):
        build_cache(parse_cache_config({"store": "redis"}), clock=fake_clock)


def test_route_cache_values() -> None:
    """true caches under the route's name, a mapping may share a namespace, false disables."""
    assert route_cache(True, "r") == RouteCache("r")
    assert route_cache({"namespace": "shared"}, "r") == RouteCache("shared")
    assert route_cache(False, "r") is None
    assert route_cache(None, "r") is None
    with pytest.raises(ConfigurationError, match="ttl"):
        route_cache({"ttl": 5}, "r")
    with pytest.raises(ConfigurationError, match="cache: false"):
        route_cache({"enabled": False}, "r")


async def test_tiered_store_reads_through_and_expires_its_near_copy(fake_clock: FakeClock) -> None:
    """The near tier answers for near_ttl; after that it reads the shared store's newer entry."""
    from gatekeeper.gateway.cache.tiered import TieredStore

    far = MemoryStore(clock=fake_clock)
    tiered = TieredStore(MemoryStore(clock=fake_clock), far, near_ttl=1.0)
    await tiered.set("k", "", entry(b"one"), 60)
    await tiered.set_vary("k", (), 60)
    await far.set("k", "", entry(b"two"), 60)  # another replica stored a newer one
    names, found = await tiered.lookup("k")
    assert names == ()
    assert found is not None
    assert found.body == b"one"
    fake_clock.advance(1.5)
    names, found = await tiered.lookup("k")
    assert found is not None
    assert found.body == b"two"
    await tiered.delete("k")
    assert await tiered.lookup("k") == (None, None)
