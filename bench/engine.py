"""The rate-limit engine: decisions per second, against its baselines, in ONE run.

Rows, all against the same Redis (``GATEKEEPER_BENCH_REDIS_URL``, default: the test Redis):

- ``gatekeeper`` (token bucket, sliding window): 64 concurrent callers, each awaiting
  ``limiter.hit(policy, key)`` in a loop over 1,000 keys; one process, uvloop.
- ``limits`` (alisaifee, ``limits.aio`` with its async Redis storage on redis-py): the same
  callers, keys and loop calling ``limiter.hit(item, key)``. It has no token bucket; its
  closest strategies are the fixed window (for token bucket: both O(1) per key) and the
  sliding-window counter (for sliding window).
- ``raw redis ceiling``: the engine's own Lua script sent as pre-encoded batched EVALSHA calls
  (64 decisions per call, 4 calls in flight) through redis-py, with no Python work per
  decision; and the same through a minimal RESP client (an asyncio Protocol + hiredis reader)
  to show what redis-py's per-call overhead costs.
- ``memory://``: the Limiter on the in-process store (64 callers), and the store's synchronous
  fast paths in a tight loop: ``store.hit(policy, key)`` and the function ``store.bind(policy)``
  returns.

Columns: decisions/s (wall clock), the ratio to ``limits`` measured in the same run, this
process's CPU us per decision, what that CPU cost allows per core (``decisions/cpu-s``: the
throughput on a core of its own, which a machine shared with other tenants hides), and the
Redis-side us per decision (INFO commandstats: the usec of every command during the
measurement divided by the decisions; other clients of a shared Redis add to it).

Policies have limits far above the offered load so that every hit is admitted and does the full
debit (denials would be answered by the over-limit cache and flatter the engine).
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from statistics import median
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from bench.report import Report
from gatekeeper.limits import Limiter, Policy, storage_from_url

REDIS_URL = os.environ.get(
    "GATEKEEPER_BENCH_REDIS_URL",
    os.environ.get("GATEKEEPER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
)
CALLERS = 64
KEYS = 1_000
LIMIT = "1000000/minute"


def _keys(seed: int) -> list[str]:
    rng = random.Random(seed)
    keys = [f"ip:10.{i // 256}.{i % 256}.1" for i in range(KEYS)]
    rng.shuffle(keys)
    return keys


class Sample(NamedTuple):
    """One measurement: throughput, and this process's CPU time per decision (which the
    other tenants of a shared machine disturb far less than throughput)."""

    rate: float
    cpu_us: float
    redis_us: float | None = None


async def _redis_usec() -> float:
    """Microseconds Redis has spent in commands since its stats were reset (all commands)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return float(sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_")))


async def _drive(
    hit: Callable[[str], Awaitable[Any]], seconds: float, *, redis: bool = True
) -> Sample:
    """Run CALLERS loops calling ``hit(key)`` for ``seconds``; decisions per second."""
    keys = _keys(7)
    stop = False
    counts = [0] * CALLERS

    async def caller(index: int) -> None:
        n = 0
        i = index * 15
        while not stop:
            await hit(keys[i % KEYS])
            i += 1
            n += 1
            if not n & 255:
                counts[index] = n
                await asyncio.sleep(0)  # a store without I/O never suspends: let others run
        counts[index] = n

    tasks = [asyncio.create_task(caller(i)) for i in range(CALLERS)]
    await asyncio.sleep(min(0.3, seconds / 4))  # warm up: connections, scripts, JIT-free caches
    usec_before = await _redis_usec() if redis else 0.0
    before = time.perf_counter()
    cpu_before = time.process_time()
    base = sum(counts)
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - before
    cpu = time.process_time() - cpu_before
    done = max(1, sum(counts) - base)
    redis_us = (await _redis_usec() - usec_before) / done if redis else None
    return Sample(done / elapsed, cpu / done * 1e6, redis_us)


async def _cleanup(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"*{prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


async def _gatekeeper(algorithm: str, seconds: float) -> tuple[Sample, float]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    limiter = Limiter(storage_from_url(REDIS_URL, prefix=prefix), deadline=1.0)
    policy = Policy.parse("bench", LIMIT, algorithm=algorithm)
    try:
        sample = await _drive(lambda key: limiter.hit(policy, key), seconds)
        stats = limiter.stats
        if stats.degraded:
            raise RuntimeError(f"{stats.degraded} degraded decisions: the run is not valid")
    finally:
        await limiter.aclose()
        await _cleanup(prefix)
    return sample, stats.mean_batch


async def _limits(strategy: str, seconds: float) -> Sample:
    from limits import parse
    from limits.aio import storage as limits_storage
    from limits.aio import strategies

    prefix = f"benchlimits{uuid.uuid4().hex[:8]}"
    store = limits_storage.RedisStorage(
        "async+" + REDIS_URL, implementation="redispy", key_prefix=prefix
    )
    cls = {
        "fixed_window": strategies.FixedWindowRateLimiter,
        "sliding_window_counter": strategies.SlidingWindowCounterRateLimiter,
    }[strategy]
    limiter = cls(store)
    item = parse(LIMIT)
    try:
        return await _drive(lambda key: limiter.hit(item, key), seconds)
    finally:
        await _cleanup(prefix)


async def _memory(seconds: float) -> tuple[Sample, Sample, Sample]:
    """The Limiter on memory://, then the store's two synchronous fast paths in a tight loop."""
    limiter = Limiter(storage_from_url("memory://"))
    policy = Policy.parse("bench", LIMIT)
    through_limiter = await _drive(lambda key: limiter.hit(policy, key), seconds, redis=False)
    await limiter.aclose()
    keys = _keys(3)

    def loop(hit: Callable[[str], Any]) -> Sample:
        n = 0
        started = time.perf_counter()
        cpu_before = time.process_time()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for key in keys:
                hit(key)
            n += KEYS
        cpu = time.process_time() - cpu_before
        return Sample(n / (time.perf_counter() - started), cpu / n * 1e6)

    store: Any = storage_from_url("memory://")
    store_hit = store.hit
    by_hit = loop(lambda key: store_hit(policy, key))
    bound = loop(storage_from_url("memory://").bind(policy))  # type: ignore[attr-defined]
    return through_limiter, by_hit, bound


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(quick: bool) -> Report:
    """Measure everything in one run; see the module docstring.

    The machine is shared, so engine and baseline are measured alternately ``repeats`` times and
    the medians are compared: a burst of load from another tenant hits both sides alike.
    """
    _use_uvloop()
    seconds = 1.0 if quick else 3.0
    repeats = 1 if quick else 3
    columns = [
        "engine",
        "algorithm",
        "store",
        "decisions/s",
        "x limits",
        "cpu us/decision",
        "decisions/cpu-s",
        "redis us/decision",
        "notes",
    ]
    report = Report("engine", columns)
    report.meta.update(
        {"callers": CALLERS, "keys": KEYS, "repeats": repeats, "seconds": seconds,
         "load_average": os.getloadavg()[0]}
    )  # fmt: skip

    def row(engine: str, algorithm: str, store: str, samples: list[Sample], ratio: float,
            notes: str) -> float:  # fmt: skip
        rate = median(s.rate for s in samples)
        cpu_us = median(s.cpu_us for s in samples)
        redis_us = [s.redis_us for s in samples if s.redis_us is not None]
        report.add(
            engine=engine,
            algorithm=algorithm,
            store=store,
            **{
                "decisions/s": rate,
                "x limits": ratio,
                "cpu us/decision": cpu_us,
                "decisions/cpu-s": 1e6 / cpu_us if cpu_us else 0.0,
                "redis us/decision": median(redis_us) if redis_us else "-",
                "notes": notes,
            },
        )
        return rate

    async def measure() -> None:
        pairs = [("token_bucket", "fixed_window"), ("sliding_window", "sliding_window_counter")]
        for ours, theirs in pairs:
            mine: list[Sample] = []
            base: list[Sample] = []
            batch = 0.0
            for _ in range(repeats):
                sample, batch = await _gatekeeper(ours, seconds)
                mine.append(sample)
                base.append(await _limits(theirs, seconds))
            baseline = median(s.rate for s in base)
            rate = median(s.rate for s in mine)
            ratio = rate / baseline if baseline else 0.0
            row("limits (alisaifee)", theirs, "redis", base, 1.0, "limits.aio on redis-py")
            row("gatekeeper", ours, "redis", mine, ratio, f"Limiter.hit, mean batch {batch:.0f}")
            cpu_ratio = median(s.cpu_us for s in base) / median(s.cpu_us for s in mine)
            report.target(f"gatekeeper {ours} vs limits {theirs} (x)", ratio, 10.0)
            report.target(f"gatekeeper {ours} vs limits {theirs}, CPU per decision (x)",
                          cpu_ratio, 10.0)  # fmt: skip
            report.target(f"gatekeeper {ours} decisions/s on Redis", rate, 100_000.0)
            report.target(f"gatekeeper {ours} decisions per CPU-second (Redis store)",
                          1e6 / median(s.cpu_us for s in mine), 100_000.0)  # fmt: skip
        ceiling = await _raw_ceiling(seconds)
        if ceiling is not None:
            row("raw redis ceiling", "token_bucket", "redis", [ceiling[0]], 0.0, ceiling[1])
            row("raw ceiling, lean client", "token_bucket", "redis", [ceiling[2]], 0.0,
                "same batches, asyncio Protocol + hiredis")  # fmt: skip
        through_limiter, by_hit, bound = await _memory(seconds)
        row("gatekeeper", "token_bucket", "memory://", [through_limiter], 0.0,
            f"Limiter.hit, {CALLERS} callers")  # fmt: skip
        row("gatekeeper", "token_bucket", "memory://", [by_hit], 0.0, "store.hit(policy, key)")
        row("gatekeeper", "token_bucket", "memory://", [bound], 0.0,
            "store.bind(policy)(key), tight loop")  # fmt: skip
        report.target("memory:// decisions/s (bound fast path)", bound.rate, 1_000_000.0)
        report.target("memory:// decisions per CPU-second (bound fast path)",
                      1e6 / bound.cpu_us, 1_000_000.0)  # fmt: skip

    asyncio.run(measure())
    return report


class _Resp(asyncio.Protocol):
    """A minimal pipelining RESP client: enough to send pre-encoded commands and read replies."""

    def __init__(self) -> None:
        import hiredis

        self.reader = hiredis.Reader()
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.waiters.popleft().set_result(reply)

    def call(self, payload: bytes) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        self.transport.write(payload)
        return future


def _resp(*parts: Any) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _lean_ceiling(seconds: float, commands: list[bytes]) -> Sample:
    """The pre-encoded batches through :class:`_Resp`, as many in flight as there are batches."""
    url = urlsplit(REDIS_URL)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(
        _Resp, url.hostname or "127.0.0.1", url.port or 6379
    )
    try:
        await proto.call(_resp(b"SELECT", (url.path or "/0").strip("/") or "0"))
        stop = False
        calls = [0] * len(commands)

        async def sender(index: int) -> None:
            while not stop:
                await proto.call(commands[index])
                calls[index] += 1

        tasks = [asyncio.create_task(sender(i)) for i in range(len(commands))]
        await asyncio.sleep(min(0.3, seconds / 4))
        usec_before = await _redis_usec()
        base = sum(calls)
        cpu_before = time.process_time()
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        stop = True
        decisions = max(1, (sum(calls) - base) * CALLERS)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        await asyncio.gather(*tasks)
        redis_us = (await _redis_usec() - usec_before) / decisions
    finally:
        transport.close()
    return Sample(decisions / elapsed, cpu / decisions * 1e6, redis_us)


async def _raw_ceiling(seconds: float) -> tuple[Sample, str, Sample] | None:
    """Pre-encoded batched EVALSHA of the engine's own script; None if the store offers none.

    The batch is encoded ONCE by the store's encoder and re-sent as is: what remains is the
    client's I/O, the network and the script in Redis.
    """
    from gatekeeper.limits import Check

    prefix = f"benchraw{uuid.uuid4().hex[:8]}"
    storage: Any = storage_from_url(REDIS_URL, prefix=prefix)
    encoder = getattr(storage, "_encoder", None)
    script = getattr(storage, "_decide", None)
    if encoder is None or script is None:
        await storage.aclose()
        return None
    policy = Policy.parse("bench", LIMIT)
    keys = _keys(11)
    in_flight = 4
    batches = []
    for b in range(in_flight):
        groups = [(Check(policy, keys[(b * CALLERS + i) % KEYS]),) for i in range(CALLERS)]
        redis_keys, args = encoder.encode(groups, None)
        batches.append((len(redis_keys), *redis_keys, *args))
    client = storage.client
    await client.script_load(script.text)
    lean = await _lean_ceiling(
        seconds, [_resp(b"EVALSHA", script.sha, *payload) for payload in batches]
    )
    stop = False
    calls = [0] * in_flight

    async def sender(index: int) -> None:
        payload = batches[index]
        while not stop:
            await client.evalsha(script.sha, *payload)
            calls[index] += 1

    tasks = [asyncio.create_task(sender(i)) for i in range(in_flight)]
    await asyncio.sleep(min(0.3, seconds / 4))
    base = sum(calls)
    cpu_before = time.process_time()
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    stop = True
    done = sum(calls) - base
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    await asyncio.gather(*tasks)
    await storage.aclose()
    await _cleanup(prefix)
    decisions = max(1, done * CALLERS)
    cpu_us = cpu / decisions * 1e6
    notes = f"pre-encoded EVALSHA x{CALLERS} decisions, {in_flight} in flight"
    return Sample(decisions / elapsed, cpu_us), notes, lean
