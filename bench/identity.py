"""Identity hot path: API key -> principal -> tier policies, with and without the hot cache.

Every request through the gateway with an API key resolves the key and its tier's policies.
The baseline, measured in the same run, is the same resolution with the cache disabled (TTL 0:
one SQL query per request on a temporary SQLite file, the embedded default). The target is the
reason the cache exists: cached resolution must be at least 20x faster. Also reported: a full
``Guard.check`` (lists, bans, key, tier limits on the memory store) per second, and the cost of
one argon2id hash with the production parameters (what a login costs in CPU).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.report import Report
from gatekeeper.identity.guard import Guard
from gatekeeper.identity.passwords import Passwords
from gatekeeper.identity.service import Identity, IdentityOptions
from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.storage.memory import MemoryStorage
from gatekeeper.persistence import Database, upgrade
from gatekeeper.types import SystemClock

KEYS = 50


async def _rate(fn: Callable[[int], Awaitable[object]], seconds: float) -> float:
    """Sequential calls per second of ``fn(i)`` for about ``seconds``."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            await fn(done)
            done += 1
    return done / (time.perf_counter() - started)


async def _stack(directory: str, cache_ttl: float) -> tuple[Identity, list[str]]:
    db = Database(f"sqlite+aiosqlite:///{Path(directory) / f'bench-{cache_ttl}.db'}")
    await upgrade(db)
    clock = SystemClock()
    options = IdentityOptions(cache_ttl=cache_ttl, argon2_time_cost=1, argon2_memory_kib=64)
    identity = Identity(db, clock, Limiter(MemoryStorage(clock=clock), clock=clock), None, options)
    user = await identity.users.register("bench@example.com", "correct horse battery")
    await identity.tiers.put("bench", [{"rate": "1000000/second"}])
    await identity.users.update(user.id, tier="bench")
    keys = [(await identity.api_keys.create(user.id, f"k{i}")).secret for i in range(KEYS)]
    return identity, keys


async def _main(quick: bool) -> Report:
    seconds = 0.5 if quick else 3.0
    report = Report(
        "identity: API key resolution and access decisions (one process, SQLite)",
        ["what", "per_second", "ratio_to_baseline"],
    )
    with tempfile.TemporaryDirectory(prefix="gk-bench-identity-") as directory:
        cold, cold_keys = await _stack(directory, cache_ttl=0.0)
        hot, hot_keys = await _stack(directory, cache_ttl=3600.0)
        try:

            async def resolve(identity: Identity, keys: list[str], i: int) -> None:
                principal = await identity.api_keys.resolve(keys[i % KEYS])
                await identity.policies_for(principal)

            baseline = await _rate(lambda i: resolve(cold, cold_keys, i), seconds)
            cached = await _rate(lambda i: resolve(hot, hot_keys, i), seconds)
            guard = Guard(hot)
            checks = await _rate(
                lambda i: guard.check("192.0.2.1", api_key=hot_keys[i % KEYS]), seconds
            )
        finally:
            await cold.db.aclose()
            await hot.db.aclose()
    report.add(what="resolve key + tier, no cache (baseline)", per_second=baseline,
               ratio_to_baseline=1.0)  # fmt: skip
    report.add(what="resolve key + tier, hot cache", per_second=cached,
               ratio_to_baseline=cached / baseline)  # fmt: skip
    report.add(what="Guard.check (lists, bans, key, tier limit)", per_second=checks,
               ratio_to_baseline=checks / baseline)  # fmt: skip
    passwords = Passwords()
    started = time.perf_counter()
    rounds = 3 if quick else 10
    for _ in range(rounds):
        await passwords.hash("correct horse battery")
    per_hash = (time.perf_counter() - started) / rounds
    report.add(what="argon2id hash, production parameters", per_second=1 / per_hash,
               ratio_to_baseline=(1 / per_hash) / baseline)  # fmt: skip
    report.target("hot cache vs SQL per request (x)", cached / baseline, 20.0)
    report.meta["argon2_ms"] = round(per_hash * 1000, 1)
    return report


def run(quick: bool) -> Report:
    """Entry point of ``python -m bench identity``."""
    return asyncio.run(_main(quick))
