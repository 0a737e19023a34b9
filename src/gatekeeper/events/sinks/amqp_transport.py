"""A TCP transport for aio-pika that sends the frames of one event-loop turn together.

aiormq writes every frame with its own ``transport.write``, and an idle asyncio transport sends
each write at once: a batch of 1,000 publishes cost 1,000 ``send`` system calls (on a loaded
machine each one handed the CPU to the broker; they were nearly all of the delivery time).
:class:`CoalescingWriter` gathers the writes of ``HOLD_SECONDS`` (1 ms) and sends them as one
buffer (the rest at once on ``close``). Frames keep their order.
The transport is plugged in through aiormq's own extension point (``TransportFactory``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aiormq import TransportFactory
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

__all__ = ["HOLD_SECONDS", "CoalescingConnection", "CoalescingWriter"]

# How long a written frame may wait for the ones after it.
HOLD_SECONDS = 0.001


class CoalescingWriter(asyncio.StreamWriter):
    """A StreamWriter whose writes of one loop turn leave in one send."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending = bytearray()
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending += data
        if not self._scheduled:
            self._scheduled = True
            # (Not call_soon: aiormq's writer task takes one frame per loop turn.)
            asyncio.get_running_loop().call_later(HOLD_SECONDS, self._send)

    def _send(self) -> None:
        self._scheduled = False
        if self._pending and not self.transport.is_closing():
            data = bytes(self._pending)
            self._pending.clear()
            super().write(data)

    # (drain is flow control, not a flush: aiormq drains after every publish, and flushing
    # there would send each frame alone again. The timer sends them; close sends the rest.)

    def close(self) -> None:
        self._send()
        super().close()


class _CoalescingTCP(TransportFactory):
    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, Any]:
        kwargs.pop("ssl_context_provider", None)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, url.host or "localhost", url.port or 5672
            )
        except OSError as exc:
            raise AMQPConnectionError(*exc.args) from exc
        return reader, CoalescingWriter(transport, protocol, reader, loop)


class CoalescingConnection(aio_pika.Connection):
    """An aio-pika connection over the coalescing transport (plain ``amqp://`` only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.url.scheme == "amqp":
            self.kwargs["transport_factory"] = _CoalescingTCP()
