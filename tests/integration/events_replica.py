"""A delivering replica for the kill -9 test: runs the events delivery loop against Redis,
delivering to one webhook, until killed.

    python -m tests.integration.events_replica <redis_url> <prefix> <hook_url> <secret>
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis

from gatekeeper.events.delivery import Deliverer, DeliveryOptions
from gatekeeper.events.redis_outbox import RedisOutbox
from gatekeeper.events.sinks.webhooks import Subscription, WebhookSink


async def main(redis_url: str, prefix: str, hook: str, secret: str) -> None:
    outbox = RedisOutbox(Redis.from_url(redis_url), prefix=prefix)
    subscription = Subscription("s", hook, secret)

    async def subscriptions() -> list[Subscription]:
        return [subscription]

    options = DeliveryOptions(batch=10, lease_seconds=1.0, poll=0.2, backoff_base=0.05)
    deliverer = Deliverer(outbox, [WebhookSink(subscriptions, timeout=5)], options)
    print("ready", flush=True)
    await deliverer.run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
