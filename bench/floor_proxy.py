"""The least a Python reverse proxy can do per request: the gateway benchmark's floor.

``python -m bench.floor_proxy LISTEN_PORT UPSTREAM_PORT`` serves HTTP/1.1 on uvloop with
httptools and forwards each request to one upstream over a keep-alive connection of its own per
client connection, with nothing else: no routing, no header rewriting beyond the request line
and headers as parsed, no limits, no logs, no metrics, no timeouts, no error handling; the
upstream's response bytes are relayed as they arrive. It supports exactly what the benchmark
sends (small GET requests, Content-Length responses) and is not part of Gatekeeper.

Its throughput is the ceiling of any design written in Python on this stack: the gap between
it and nginx is the interpreter's, the gap between it and Gatekeeper is Gatekeeper's.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    """The upstream side of one client connection: relays each response to the client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.client.next_request()


class Client(asyncio.Protocol):
    """One client connection: parses requests, sends them upstream one at a time."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.upstream: Upstream | None = None
        self.queue: list[bytes] = []
        self.busy = False
        self.url = b""
        self.head: list[bytes] = []
        self.connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        loop = asyncio.get_running_loop()
        self.connecting = loop.create_task(self._connect(loop))

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        _, self.upstream = await loop.create_connection(
            lambda: Upstream(self), "127.0.0.1", self.upstream_port
        )
        self.next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url
        self.head = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.append(b"%s: %s\r\n" % (name, value))

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        self.queue.append(b"%s %s HTTP/1.1\r\n%s\r\n" % (method, self.url, b"".join(self.head)))
        if not self.busy:
            self.next_request()

    def next_request(self) -> None:
        self.busy = False
        if self.queue and self.upstream is not None:
            self.busy = True
            self.upstream.transport.write(self.queue.pop(0))


async def serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream_port), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
