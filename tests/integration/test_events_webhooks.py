"""Webhooks to a real HTTP receiver: Standard Webhooks signatures verify, a 500 is retried
until a 200 with the same webhook-id, filters pick the events, a wrong secret is refused."""

from __future__ import annotations

import json

from gatekeeper.events.delivery import Deliverer, DeliveryOptions
from gatekeeper.events.model import Event
from gatekeeper.events.outbox import MemoryOutbox
from gatekeeper.events.sinks.webhooks import Subscription, WebhookSink, new_secret, sign
from tests.integration.events_support import WebhookReceiver

FAST = DeliveryOptions(max_attempts=5, backoff_base=0.01, backoff_max=0.05)


def test_the_signature_matches_the_specification_example() -> None:
    """The Standard Webhooks reference example signs to its published value."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


async def _deliver(subs: list[Subscription], events: list[Event]) -> Deliverer:
    outbox = MemoryOutbox()
    await outbox.append(events)

    async def current() -> list[Subscription]:
        return subs

    sink = WebhookSink(current, timeout=5)
    deliverer = Deliverer(outbox, [sink], FAST)
    try:
        assert await deliverer.run_once(wait=0) == len(events)
    finally:
        await sink.aclose()
    return deliverer


async def test_a_500_is_retried_until_200_with_the_same_id_and_a_valid_signature() -> None:
    """Receiver answers 500 twice then 200: three POSTs, one webhook-id (the event id), each
    signed validly; the body is the CloudEvents envelope."""
    secret = new_secret()
    receiver = await WebhookReceiver(secret=secret, script=[500, 500]).start()
    try:
        event = Event("key.banned", {"key_id": "k1", "seconds": 300}, 1.7e9, "gk/t", "key:k1")
        deliverer = await _deliver([Subscription("s1", receiver.url, secret)], [event])
    finally:
        await receiver.stop()
    assert len(receiver.received) == 3
    assert all(r.valid for r in receiver.received)
    assert {r.headers["webhook-id"] for r in receiver.received} == {event.id}
    body = json.loads(receiver.received[-1].body)
    assert body["type"] == "gatekeeper.key.banned"
    assert body["data"] == {"key_id": "k1", "seconds": 300}
    records = await deliverer.outbox.deliveries(10)
    assert [r["status"] for r in records] == ["delivered", "failed", "failed"]
    assert records[-1]["error"] == "answered 500"


async def test_filters_choose_what_each_subscriber_gets() -> None:
    """A key.* subscriber gets key events only; a disabled one gets nothing."""
    secret = new_secret()
    keys = await WebhookReceiver(secret=secret).start()
    off = await WebhookReceiver(secret=secret).start()
    try:
        subs = [
            Subscription("keys", keys.url, secret, ("key.*",)),
            Subscription("off", off.url, secret, ("*",), enabled=False),
        ]
        events = [
            Event("key.blocked", {}, 1.7e9, "t"),
            Event("ip.banned", {}, 1.7e9, "t"),
            Event("key.unblocked", {}, 1.7e9, "t"),
        ]
        await _deliver(subs, events)
    finally:
        await keys.stop()
        await off.stop()
    got = [json.loads(r.body)["type"] for r in keys.received]
    assert got == ["gatekeeper.key.blocked", "gatekeeper.key.unblocked"]
    assert off.received == []


async def test_a_receiver_that_never_accepts_ends_in_the_dead_letter_list() -> None:
    """Signed with another secret the receiver refuses (401) every try: dead-lettered after
    max_attempts, naming the subscription."""
    receiver = await WebhookReceiver(secret=new_secret()).start()
    try:
        event = Event("test", {"message": "hi"}, 1.7e9, "t")
        deliverer = await _deliver([Subscription("s9", receiver.url, new_secret())], [event])
    finally:
        await receiver.stop()
    assert len(receiver.received) == FAST.max_attempts
    assert not any(r.valid for r in receiver.received)
    dead = await deliverer.outbox.dead_letters(10)
    assert dead[0]["target"] == "webhook:s9"
    assert dead[0]["error"] == "answered 401"
