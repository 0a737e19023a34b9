"""Events: what emitting costs on the request path, and how fast one process delivers.

- **emit**: ns per :meth:`BufferedEmitter.emit` (the request path's whole cost of an event),
  against a baseline measured in the same run: one ``deque.append`` of a tuple. Target <= 1 us.
- **flush**: ns per event to build the envelope objects off the path (ids, timestamps).
- **delivery**: events per second from the outbox to RabbitMQ (publisher confirms, a batch's
  confirms awaited together) and to NATS JetStream (acknowledged publishes), through the real
  delivery loop (lease, read, send, record, acknowledge) from one process, with the in-process
  outbox and with the Redis stream outbox. RabbitMQ routes every message to a bound queue; the
  NATS stream stores every message. Target >= 5,000 events/s for each broker. CPU us per
  event is the process's CPU time over the delivered events.

Brokers: ``GATEKEEPER_BENCH_AMQP_URL`` and ``GATEKEEPER_BENCH_NATS_URL`` (default: the local
servers on their standard ports). Medians over rounds; the machine's load average is recorded.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections import deque
from typing import Any

from bench.report import Report
from gatekeeper.events.delivery import Deliverer, DeliveryOptions
from gatekeeper.events.emitter import BufferedEmitter
from gatekeeper.events.model import Event
from gatekeeper.events.outbox import MemoryOutbox, Outbox
from gatekeeper.events.redis_outbox import RedisOutbox
from gatekeeper.events.sinks.brokers import AmqpSink, NatsSink

AMQP = os.environ.get("GATEKEEPER_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS = os.environ.get("GATEKEEPER_BENCH_NATS_URL", "nats://127.0.0.1:4222")


def _per_call_ns(fn: Any, n: int, rounds: int) -> float:
    """Median over ``rounds`` of ns per call (``fn(n)`` loops ``n`` times itself)."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn(n)
        samples.append((time.perf_counter_ns() - start) / n)
    return statistics.median(samples)


def _emit_rows(report: Report, quick: bool) -> float:
    n = 20_000 if quick else 200_000
    rounds = 5 if quick else 9
    outbox = MemoryOutbox()
    data = {"ip": "10.0.0.1", "seconds": 300}
    sink: deque[tuple[str, Any, Any, float]] = deque()

    def baseline(k: int) -> None:
        append = sink.append
        for _ in range(k):
            append(("ip.banned", data, None, 0.0))
        sink.clear()

    def emit(k: int) -> None:
        emitter = BufferedEmitter(outbox, capacity=k + 1)
        e = emitter.emit
        for _ in range(k):
            e("ip.banned", data, subject="ip:10.0.0.1")

    base = _per_call_ns(baseline, n, rounds)
    cost = _per_call_ns(emit, n, rounds)
    report.add(case="emit (request path)", value=round(cost, 1), unit="ns/event",
               baseline=round(base, 1), x_baseline=round(cost / base, 2))  # fmt: skip

    def flush(k: int) -> None:
        emitter = BufferedEmitter(MemoryOutbox(), capacity=k + 1)
        for _ in range(k):
            emitter.emit("ip.banned", data)
        asyncio.run(emitter.flush(max_batch=k))

    build = _per_call_ns(flush, n // 4, 3)
    report.add(case="emit + flush (off the path)", value=round(build, 1), unit="ns/event",
               baseline=round(base, 1), x_baseline=round(build / base, 2))  # fmt: skip
    return cost


async def _deliver(outbox: Outbox, sink: Any, n: int) -> tuple[float, float]:
    """Events/s and CPU us/event to deliver ``n`` events already in ``outbox``."""
    options = DeliveryOptions(batch=1000, poll=0.05, lease_seconds=30)
    deliverer = Deliverer(outbox, [sink], options)
    await sink.send([])  # connect before the clock starts
    wall, cpu = time.perf_counter(), time.process_time()
    done = 0
    while done < n:
        done += await deliverer.run_once(wait=0.05) or 0
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert deliverer.dead == 0, "a benchmark delivery failed"
    return n / wall, cpu / n * 1e6


def _events(n: int) -> list[Event]:
    return [Event("ip.banned", {"ip": f"10.0.{i >> 8 & 255}.{i & 255}", "seconds": 300},
                  time.time(), "gatekeeper/bench") for i in range(n)]  # fmt: skip


async def _broker_round(kind: str, outbox_kind: str, n: int) -> tuple[float, float]:
    tag = uuid.uuid4().hex[:8]
    if kind in ("amqp", "amqp-plain"):
        sink: Any = AmqpSink(AMQP, exchange=f"bench-{tag}", coalesce=kind == "amqp")
    else:
        sink = NatsSink(NATS, stream=f"BENCH_{tag}", prefix=f"bench-{tag}")
    redis = None
    outbox: Outbox
    if outbox_kind == "redis":
        from redis.asyncio import Redis

        redis = Redis.from_url(
            os.environ.get("GATEKEEPER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
        )
        outbox = RedisOutbox(redis, prefix=f"bench-{tag}")
    else:
        outbox = MemoryOutbox()
    try:
        await outbox.append(_events(n))
        if kind != "nats":
            # A queue bound to every event, so that the broker routes (and stores) each one.
            await sink.send([])
            channel = await sink._connection.channel()
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(sink._exchange, routing_key="#")
        return await _deliver(outbox, sink, n)
    finally:
        await _cleanup(kind, sink, tag)
        await sink.aclose()
        if redis is not None:
            keys = [k async for k in redis.scan_iter(match=f"bench-{tag}*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()


async def _cleanup(kind: str, sink: Any, tag: str) -> None:
    """Delete the exchange or stream the round created (brokers are shared)."""
    try:
        if kind != "nats" and sink._exchange is not None:
            await sink._exchange.delete()
        elif kind == "nats" and sink._js is not None:
            await sink._js.delete_stream(f"BENCH_{tag}")
    except Exception as exc:  # cleanup of a shared broker: report, do not fail the figures
        print(f"[events] cleanup of {kind} {tag} failed: {exc}")


def run(quick: bool) -> Report:
    report = Report(
        "events", ["case", "value", "unit", "baseline", "x_baseline", "cpu_us_per_event"]
    )
    report.meta["loadavg"] = os.getloadavg()
    report.meta["cpus"] = os.cpu_count()
    emit_ns = _emit_rows(report, quick)
    report.target("emit: events per us on the request path (1 / us per emit)", 1000 / emit_ns, 1.0)
    n = 5_000 if quick else 20_000
    rounds = 3 if quick else 5
    # The baseline (same run): aio-pika over its own transport, one send per frame.
    cases = [("amqp-plain", "memory")]
    cases += [(kind, outbox) for kind in ("amqp", "nats") for outbox in ("memory", "redis")]
    for kind, outbox_kind in cases:
        samples = [asyncio.run(_broker_round(kind, outbox_kind, n)) for _ in range(rounds)]
        rate = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        name = "amqp, aio-pika's own transport" if kind == "amqp-plain" else kind
        report.add(case=f"deliver to {name} ({outbox_kind} outbox)", value=round(rate),
                   unit="events/s", cpu_us_per_event=round(cpu, 1))  # fmt: skip
        if outbox_kind == "memory" and kind != "amqp-plain":
            report.target(f"delivery to {kind}: events/s from one process", rate, 5000)
    return report
