"""Tunnels: an upgraded connection's bytes (WebSocket) relayed both ways.

After a 101 (Switching Protocols) neither side speaks HTTP any more. Both transports are handed
to one :class:`Tunnel`, whose two ends pass bytes through as they come:

- backpressure each way: while one side's send buffer is full, reading the other side pauses,
  so a fast sender never fills the gateway's memory;
- half-close: an end of stream from one side is passed on as an end of stream to the other
  (``write_eof``); the tunnel closes when both sides have ended, or when either connection is
  lost (the other is then closed after what it was sent is flushed).

The tunnel has no idle timeout of its own: the protocol inside it (WebSocket pings) and the two
peers decide how long it lives; a graceful shutdown cuts it at the end of the grace period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Tunnel"]


class Tunnel:
    """Two transports joined: what one side sends, the other receives."""

    def __init__(
        self,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        on_close: Callable[[], None],
    ) -> None:
        self.client = _End(self, client)
        self.upstream = _End(self, upstream)
        self.client.peer = self.upstream
        self.upstream.peer = self.client
        self.closed = False
        self._on_close = on_close

    def start(self, to_upstream: bytes = b"", to_client: bytes = b"") -> None:
        """Take both transports over; ``to_upstream``/``to_client`` are bytes of the upgraded
        protocol that arrived with the HTTP exchange (read before the switch)."""
        for end in (self.client, self.upstream):
            end.transport.set_protocol(end)
        if to_upstream:
            self.upstream.transport.write(to_upstream)
        if to_client:
            self.client.transport.write(to_client)
        for end in (self.client, self.upstream):
            if end.transport.is_closing():
                self.close()  # one side went away during the switch
                return
        for end in (self.client, self.upstream):
            end.transport.resume_reading()

    def close(self) -> None:
        """Close both sides (each flushes what it was sent first)."""
        if self.closed:
            return
        self.closed = True
        self.client.transport.close()
        self.upstream.transport.close()
        self._on_close()


class _End(asyncio.Protocol):
    """One side of a tunnel: its transport, and the other side it feeds."""

    peer: _End

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.ended = False  # this side sent its end of stream

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.ended = True
        if self.peer.ended or not self.peer.transport.can_write_eof():
            self.tunnel.close()
            return False
        self.peer.transport.write_eof()
        return True  # half-closed: the other direction goes on

    def pause_writing(self) -> None:
        # This side's send buffer is full: stop reading what would be written to it.
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close()
