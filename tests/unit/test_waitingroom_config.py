"""Tenant config: the seed's keys, defaults and bounds; the read-through cache."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from gatekeeper.errors import StorageError
from gatekeeper.testing import FakeClock
from gatekeeper.waitingroom.config import CONFIG_KEYS, TenantConfig
from gatekeeper.waitingroom.config_repository import CachedConfigs, MemoryConfigRepository


def test_keys_and_defaults_follow_the_seed() -> None:
    """The eight keys of the seed, with the persisted defaults."""
    assert set(CONFIG_KEYS) == {
        "admission_limit", "admission_frequency", "jwt_expiry_seconds", "ready_ttl_seconds",
        "ip_enqueue_limit", "ip_enqueue_limit_interval", "ip_status_polling_limit",
        "ip_status_polling_limit_interval",
    }  # fmt: skip
    config = TenantConfig()
    assert (config.admission_limit, config.admission_frequency) == (10, 5)
    assert (config.jwt_expiry_seconds, config.ready_ttl_seconds) == (120, 300)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("jwt_expiry_seconds", 59),
        ("jwt_expiry_seconds", 601),
        ("ready_ttl_seconds", 59),
        ("ready_ttl_seconds", 3601),
        ("admission_limit", 0),
        ("admission_frequency", 0),
        ("ip_enqueue_limit", -1),
        ("ip_status_polling_limit_interval", 0),
        ("admission_limit", "many"),
        ("unknown_key", 1),
    ],
)
def test_out_of_bounds_updates_name_the_field(field: str, value: object) -> None:
    """A partial update out of bounds fails and the error names the field."""
    with pytest.raises(ValidationError) as info:
        TenantConfig().updated({field: value})
    assert field in str(info.value)


def test_partial_update_keeps_other_keys() -> None:
    """Updating two keys leaves the others as they were."""
    config = TenantConfig().updated({"admission_limit": 20, "jwt_expiry_seconds": 600})
    assert config.admission_limit == 20
    assert config.jwt_expiry_seconds == 600
    assert config.ready_ttl_seconds == 300
    assert config.admission_rate == 4.0


async def test_cache_serves_until_ttl_then_rereads() -> None:
    """Changes made elsewhere are seen after the TTL; unknown tenants are cached as None."""
    clock = FakeClock()
    repository = MemoryConfigRepository(["a"])
    cache = CachedConfigs(repository, clock, ttl=2.0)
    assert (await cache.get("a")) == TenantConfig()
    assert await cache.get("b") is None
    await repository.save("a", TenantConfig(admission_limit=99))
    await repository.ensure(["b"])
    assert (await cache.get("a")).admission_limit == 10  # type: ignore[union-attr]
    clock.advance(2.0)
    assert (await cache.get("a")).admission_limit == 99  # type: ignore[union-attr]
    assert await cache.get("b") is not None
    assert await cache.tenants() == ["a", "b"]


def test_public_surface_is_sorted_and_importable() -> None:
    """gatekeeper.waitingroom re-exports a sorted, complete, importable __all__."""
    import gatekeeper.waitingroom as wr

    assert wr.__all__ == sorted(wr.__all__)
    for name in wr.__all__:
        assert getattr(wr, name) is not None


class _CountingRepository(MemoryConfigRepository):
    """Counts reads and holds each one until released, so that callers pile up."""

    def __init__(self, tenants: list[str]) -> None:
        super().__init__(tenants)
        self.reads = 0
        self.release = asyncio.Event()
        self.fail = False

    async def get(self, tenant: str) -> TenantConfig | None:
        self.reads += 1
        await self.release.wait()
        if self.fail:
            raise StorageError("database down")
        return await super().get(tenant)


async def test_concurrent_misses_read_the_repository_once() -> None:
    """Fifty requests arriving as an entry expires share one read; a failed read is shared
    too and the next request reads again."""
    clock = FakeClock()
    repository = _CountingRepository(["a"])
    cache = CachedConfigs(repository, clock, ttl=2.0)
    waiters = [asyncio.ensure_future(cache.get("a")) for _ in range(50)]
    await asyncio.sleep(0)
    repository.release.set()
    assert all(c == TenantConfig() for c in await asyncio.gather(*waiters))
    assert repository.reads == 1
    clock.advance(2.0)
    repository.fail = True
    results = await asyncio.gather(*(cache.get("a") for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results)
    assert repository.reads == 2
    repository.fail = False
    assert await cache.get("a") == TenantConfig()
    assert repository.reads == 3
