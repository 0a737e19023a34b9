"""Brokers, chosen by URL: RabbitMQ (``amqp://``, ``amqps://``) or NATS JetStream (``nats://``,
``tls://``).

- **RabbitMQ** (aio-pika): a durable topic exchange (``gatekeeper.events`` unless the URL's
  ``exchange`` query parameter names another), routing key = the full event type
  (``gatekeeper.key.banned``), persistent messages whose ``message_id`` is the event id, and
  publisher confirms. A batch is published at once and its confirms awaited together (one
  round trip per batch, not per message).
- **NATS JetStream** (nats-py): subject = the full event type (``gatekeeper.key.banned``; the
  URL's ``prefix`` replaces ``gatekeeper``), the event id as ``Nats-Msg-Id`` (the server drops
  a duplicate inside its window), every publish acknowledged by the stream; the stream
  (``GATEKEEPER_EVENTS`` over ``gatekeeper.>``, or the URL's ``stream``) is created when
  missing.

A broker that is down fails the batch's attempts (retried by the delivery loop); the connection
is reopened on the next try.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from gatekeeper.errors import ConfigurationError
from gatekeeper.events.model import Event, wanted_by
from gatekeeper.events.sinks.base import Attempt

__all__ = ["AmqpSink", "NatsSink", "broker_from_url"]


class BrokerError(Exception):
    """The broker did not take a message."""


def _split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), query


class AmqpSink:
    """Publishes to a RabbitMQ topic exchange with publisher confirms."""

    name = "amqp"

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "gatekeeper.events",
        timeout: float = 10.0,
        coalesce: bool = True,
    ) -> None:
        self.url = url
        # Frames of 1 ms sent together (amqp_transport); False: aio-pika's own transport.
        self.coalesce = coalesce
        self.exchange_name = exchange
        self.timeout = timeout
        self._connection: Any = None
        self._exchange: Any = None

    async def _open(self) -> Any:
        if self._exchange is not None and not self._connection.is_closed:
            return self._exchange
        import aio_pika

        await self._drop()
        from gatekeeper.events.sinks.amqp_transport import CoalescingConnection

        self._connection = await asyncio.wait_for(
            aio_pika.connect(
                self.url,
                timeout=self.timeout,
                connection_class=CoalescingConnection if self.coalesce else aio_pika.Connection,
            ),
            self.timeout,
        )
        channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        return self._exchange

    async def _drop(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), 2)
            except Exception:  # closing a broken connection: nothing left to save
                pass

    async def plan(self, events: Sequence[Event]) -> list[Attempt]:
        return [Attempt("amqp", e) for e in events if wanted_by("amqp", e)]

    async def send(self, attempts: Sequence[Attempt]) -> list[BaseException | None]:
        import aio_pika

        try:
            exchange = await self._open()
        except Exception as exc:  # aio-pika/aiormq/socket errors: the whole batch failed
            await self._drop()
            return [BrokerError(f"amqp: {type(exc).__name__}: {exc}")] * len(attempts)
        messages = [
            (
                aio_pika.Message(
                    a.event.to_json(),
                    message_id=a.event.id,
                    type=a.event.full_type,
                    content_type="application/cloudevents+json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                a.event.full_type,
            )
            for a in attempts
        ]
        # Every publish at once, their confirms awaited together under one timeout (a timer
        # task per message cost more CPU than the publish).
        # (mandatory=False: a message no queue is bound for is dropped by the broker, as a topic
        # nobody listens to is; returned messages cost a round of frames each.)
        futures = [
            asyncio.ensure_future(exchange.publish(m, routing_key=k, mandatory=False))
            for m, k in messages
        ]
        if futures:
            await asyncio.wait(futures, timeout=self.timeout)
        out: list[BaseException | None] = []
        for future in futures:
            if not future.done():
                future.cancel()
                out.append(BrokerError("amqp: no publisher confirm in time"))
            elif future.cancelled():
                out.append(BrokerError("amqp: publish cancelled"))
            else:
                out.append(future.exception())
        if any(r is not None for r in out):
            await self._drop()  # reopen on the next try rather than reuse a broken channel
        return out

    async def aclose(self) -> None:
        await self._drop()


def _failed(error: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    future.exception()  # (retrieved: no "never retrieved" warning)
    return future


async def _quiet(error: Exception) -> None:
    """nats-py's error callback: failures reach us as the publish's exception already."""


class NatsSink:
    """Publishes to NATS JetStream, one subject per event type, acknowledged."""

    name = "nats"

    def __init__(
        self,
        url: str,
        *,
        stream: str = "GATEKEEPER_EVENTS",
        prefix: str = "gatekeeper",
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.stream = stream
        self.prefix = prefix
        self.timeout = timeout
        self._nc: Any = None
        self._js: Any = None

    async def _open(self) -> Any:
        if self._js is not None and self._nc.is_connected:
            return self._js
        import nats
        from nats.js.errors import NotFoundError

        await self._drop()
        self._nc = await asyncio.wait_for(
            nats.connect(
                self.url,
                connect_timeout=self.timeout,
                # The delivery loop reconnects (and retries) on its own. (0 would mean "retry
                # the first connection forever" to nats-py.)
                allow_reconnect=False,
                max_reconnect_attempts=1,
                error_cb=_quiet,
            ),
            self.timeout * 2,
        )
        js = self._nc.jetstream(timeout=self.timeout)
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            await js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])
        self._js = js
        return js

    async def _drop(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), 2)
            except Exception:  # closing a broken connection: nothing left to save
                pass

    async def plan(self, events: Sequence[Event]) -> list[Attempt]:
        return [Attempt("nats", e) for e in events if wanted_by("nats", e)]

    async def send(self, attempts: Sequence[Attempt]) -> list[BaseException | None]:
        try:
            js = await self._open()
        except Exception as exc:  # nats-py/socket errors: the whole batch failed
            await self._drop()
            return [BrokerError(f"nats: {type(exc).__name__}: {exc}")] * len(attempts)
        # Asynchronous publishes: every message goes out at once and the stream's acks are
        # awaited together (a request/reply round trip per message was the bottleneck).
        futures: list[asyncio.Future[Any]] = []
        out: list[BaseException | None] = []
        try:
            for a in attempts:
                futures.append(
                    await js.publish_async(
                        f"{self.prefix}.{a.event.type}",
                        a.event.to_json(),
                        # (None: no timer per message, and no yield to the loop between
                        # publishes, so that nats-py writes the batch in a few syscalls;
                        # batches stay below its 4,000 pending publishes.)
                        wait_stall=None,
                        headers={"Nats-Msg-Id": a.event.id},
                    )
                )
        except Exception as exc:  # the connection broke mid-batch: the rest failed
            broken = BrokerError(f"nats: {type(exc).__name__}: {exc}")
            futures += [_failed(broken) for _ in range(len(attempts) - len(futures))]
        if futures:
            await asyncio.wait(futures, timeout=self.timeout)
        for future in futures:
            if not future.done():
                future.cancel()
                out.append(BrokerError("nats: no acknowledgement in time"))
            elif future.cancelled():
                out.append(BrokerError("nats: publish cancelled"))
            else:
                out.append(future.exception())
        if any(r is not None for r in out):
            await self._drop()
        return out

    async def aclose(self) -> None:
        await self._drop()


def broker_from_url(url: str, *, timeout: float = 10.0) -> AmqpSink | NatsSink:
    """The broker sink for ``url`` (``amqp://``, ``amqps://``, ``nats://``, ``tls://``)."""
    base, query = _split(url)
    scheme = urlsplit(url).scheme
    if scheme in ("amqp", "amqps"):
        return AmqpSink(base, exchange=query.get("exchange", "gatekeeper.events"), timeout=timeout)
    if scheme in ("nats", "tls"):
        return NatsSink(
            base,
            stream=query.get("stream", "GATEKEEPER_EVENTS"),
            prefix=query.get("prefix", "gatekeeper"),
            timeout=timeout,
        )
    raise ConfigurationError(
        f"GATEKEEPER_EVENTS_BROKER_URL: unsupported scheme {scheme!r} (amqp://, amqps://, nats://)"
    )
