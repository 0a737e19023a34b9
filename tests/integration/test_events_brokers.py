"""Events to the running RabbitMQ and NATS JetStream: routing, persistence, ids; and a broker
cut off mid-stream then back (through a relay on a fixed port): nothing lost, and any
duplicate carries the same id."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import nats
import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.events.delivery import Deliverer, DeliveryOptions
from gatekeeper.events.model import Event
from gatekeeper.events.outbox import MemoryOutbox
from gatekeeper.events.sinks.brokers import AmqpSink, NatsSink, broker_from_url
from tests.integration.events_support import Relay

OPTIONS = DeliveryOptions(max_attempts=20, backoff_base=0.05, backoff_max=0.2, batch=100)


async def _deliver_across_a_cut(
    sink: AmqpSink | NatsSink, relay: Relay
) -> tuple[list[Event], list[Event]]:
    """40 events delivered, the relay cut, 40 more delivered once it is back after three
    failed tries (the backoff's sleeps restore it); the two batches."""
    outbox = MemoryOutbox()
    sleep = _CutAfter(relay, tries=3)
    deliverer = Deliverer(outbox, [sink], OPTIONS, sleep=sleep)
    try:
        first, second = _events(40), _events(40, 40)
        await outbox.append(first)
        assert await deliverer.run_once(wait=0) == 40
        await relay.cut()
        await outbox.append(second)
        assert await deliverer.run_once(wait=0) == 40
    finally:
        await sink.aclose()
        await relay.cut()
    assert sleep.pauses >= 3
    return first, second


def _events(n: int, start: int = 0) -> list[Event]:
    return [
        Event("ip.banned", {"i": i}, 1.7e9, "t", f"ip:10.0.0.{i}") for i in range(start, start + n)
    ]


def _via(url: str, relay: Relay) -> str:
    parts = urlsplit(url)
    auth = f"{parts.username}:{parts.password}@" if parts.username else ""
    return f"{parts.scheme}://{auth}127.0.0.1:{relay.port}{parts.path}"


async def _relay(url: str) -> Relay:
    parts = urlsplit(url)
    return await Relay(parts.hostname or "127.0.0.1", parts.port or 0).start()


class _CutAfter:
    """The deliverer's sleep: after ``tries`` pauses, restore the relay."""

    def __init__(self, relay: Relay, tries: int) -> None:
        self.relay, self.tries, self.pauses = relay, tries, 0

    async def __call__(self, seconds: float) -> None:
        self.pauses += 1
        if self.pauses == self.tries:
            await self.relay.restore()


def test_the_url_scheme_chooses_the_broker() -> None:
    """amqp:// -> RabbitMQ (exchange from the query), nats:// -> NATS; others refused."""
    amqp = broker_from_url("amqp://guest:guest@h:5672/?exchange=ex")
    assert isinstance(amqp, AmqpSink)
    assert amqp.exchange_name == "ex"
    nats_sink = broker_from_url("nats://h:4222?stream=S&prefix=p")
    assert isinstance(nats_sink, NatsSink)
    assert (nats_sink.stream, nats_sink.prefix) == ("S", "p")
    with pytest.raises(ConfigurationError, match="unsupported scheme"):
        broker_from_url("kafka://h:9092")


# -- RabbitMQ --------------------------------------------------------------------------------


@pytest.fixture
async def amqp_queue(amqp_url: str) -> AsyncIterator[tuple[str, Any]]:
    """A fresh exchange name and a queue bound to everything published to it."""
    exchange = f"test-events-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(ex, routing_key="gatekeeper.#")
    try:
        yield exchange, queue
    finally:
        await ex.delete()
        await connection.close()


async def _drain(queue: Any) -> list[Any]:
    out = []
    while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
        out.append(message)
    return out


async def test_rabbitmq_gets_persistent_messages_routed_by_type(
    amqp_url: str, amqp_queue: tuple[str, Any]
) -> None:
    """Routing key = full type, message id = event id, persistent, CloudEvents body."""
    exchange, queue = amqp_queue
    sink = AmqpSink(amqp_url, exchange=exchange, timeout=5)
    events = _events(50)
    outbox = MemoryOutbox()
    await outbox.append(events)
    try:
        assert await Deliverer(outbox, [sink], OPTIONS).run_once(wait=0) == 50
    finally:
        await sink.aclose()
    got = await _drain(queue)
    assert [m.message_id for m in got] == [e.id for e in events]
    assert {m.routing_key for m in got} == {"gatekeeper.ip.banned"}
    assert {m.delivery_mode for m in got} == {aio_pika.DeliveryMode.PERSISTENT}


async def test_rabbitmq_down_then_back_loses_nothing(
    amqp_url: str, amqp_queue: tuple[str, Any]
) -> None:
    """Cut after a first batch; the next batch fails until the relay is back, then arrives:
    every id at least once, any duplicate with the same id."""
    exchange, queue = amqp_queue
    relay = await _relay(amqp_url)
    sink = AmqpSink(_via(amqp_url, relay) + f"?exchange={exchange}", exchange=exchange, timeout=3)
    first, second = await _deliver_across_a_cut(sink, relay)
    got = Counter(m.message_id for m in await _drain(queue))
    assert set(got) == {e.id for e in first + second}


# -- NATS JetStream --------------------------------------------------------------------------


@pytest.fixture
async def nats_stream(nats_url: str) -> AsyncIterator[tuple[str, str, Any]]:
    """A stream name and subject prefix of this test's own (deleted afterwards), and a
    JetStream context to read it with."""
    tag = uuid.uuid4().hex[:8]
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        yield f"TEST_{tag}", f"test-{tag}", js
    finally:
        try:
            await js.delete_stream(f"TEST_{tag}")
        finally:
            await nc.close()


async def _stored(js: Any, stream: str) -> list[tuple[str, dict[str, str]]]:
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(stream, seq)
        out.append((message.subject, dict(message.headers or {})))
    return out


async def test_nats_stores_each_event_under_its_type_subject(
    nats_url: str, nats_stream: tuple[str, str, Any]
) -> None:
    """The stream is created, each publish acknowledged, subject per type, Nats-Msg-Id = id."""
    stream, prefix, js = nats_stream
    sink = NatsSink(nats_url, stream=stream, prefix=prefix, timeout=5)
    events = _events(30)
    outbox = MemoryOutbox()
    await outbox.append(events)
    try:
        assert await Deliverer(outbox, [sink], OPTIONS).run_once(wait=0) == 30
    finally:
        await sink.aclose()
    stored = await _stored(js, stream)
    assert [h["Nats-Msg-Id"] for _, h in stored] == [e.id for e in events]
    assert {s for s, _ in stored} == {f"{prefix}.ip.banned"}


async def test_nats_down_then_back_loses_nothing_and_stores_no_duplicate(
    nats_url: str, nats_stream: tuple[str, str, Any]
) -> None:
    """Cut mid-stream, back after a few failed tries: every event stored exactly once (the
    server drops a re-publish with the same Nats-Msg-Id)."""
    stream, prefix, js = nats_stream
    relay = await _relay(nats_url)
    sink = NatsSink(_via(nats_url, relay), stream=stream, prefix=prefix, timeout=3)
    first, second = await _deliver_across_a_cut(sink, relay)
    ids = [h["Nats-Msg-Id"] for _, h in await _stored(js, stream)]
    assert sorted(ids) == sorted(e.id for e in first + second)
