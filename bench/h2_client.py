"""A lean ShouldRateLimit load generator: ``python -m bench.h2_client PORT DOMAIN CONNECTIONS
IN_FLIGHT SECONDS`` prints ``{"calls", "seconds", "errors", "over_limit"}`` as JSON.

grpcio's Python client spends more CPU per call than the server it measures, so on a two-core
machine it, not the server, sets the pace. This one writes pre-encoded HTTP/2 frames (HEADERS
with a fixed block, DATA with one of 1,000 requests like Envoy's ``remote_address`` action
sends) on CONNECTIONS connections, IN_FLIGHT calls each, and counts the trailers coming back
(decoded with hpack: ``grpc-status: 0`` is OK, anything else an error). Only what a unary call
needs of HTTP/2: the preface, SETTINGS and their acknowledgement, connection WINDOW_UPDATEs.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from hpack import Decoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PATH = b"/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream)
        + payload
    )


def _literal(index: int, value: bytes) -> bytes:
    return bytes((index,)) + bytes((len(value),)) + value  # literal without indexing, name index


# :method POST, :scheme http, :path, :authority, content-type, te: trailers (no Huffman).
BLOCK = (
    b"\x83\x86" + _literal(4, PATH) + _literal(1, b"gatekeeper")
    + b"\x0f\x10\x10application/grpc" + b"\x00\x02te\x08trailers"
)  # fmt: skip


def _messages(domain: str) -> list[bytes]:
    out = []
    for i in range(1000):
        entry = ratelimit_pb2.RateLimitDescriptor.Entry(
            key="remote_address", value=f"10.{i // 250}.{i % 250}.1"
        )
        request = rls_pb2.RateLimitRequest(
            domain=domain, descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=[entry])]
        )
        body = request.SerializeToString()
        out.append(b"\x00" + struct.pack(">I", len(body)) + body)
    return out


class _Client(asyncio.Protocol):
    def __init__(self, messages: list[bytes], in_flight: int, deadline: float) -> None:
        self.messages = messages
        self.in_flight = in_flight
        self.deadline = deadline
        self.next_stream = 1
        self.buffer = bytearray()
        self.calls = self.errors = self.over = 0
        self.open = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.decoder = Decoder()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        settings = struct.pack(">HI", 0x4, 1 << 24)
        self.transport.write(
            PREFACE + _frame(4, 0, 0, settings) + _frame(8, 0, 0, struct.pack(">I", 1 << 30))
        )
        self._send(self.in_flight)

    def _send(self, count: int) -> None:
        out = []
        for _ in range(count):
            stream = self.next_stream
            self.next_stream += 2
            message = self.messages[(stream // 2) % 1000]
            out.append(_frame(1, 0x4, stream, BLOCK))
            out.append(_frame(0, 0x1, stream, message))
            self.open += 1
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        at = 0
        finished = 0
        while len(buffer) - at >= 9:
            length = int.from_bytes(buffer[at : at + 3], "big")
            end = at + 9 + length
            if end > len(buffer):
                break
            kind, flags = buffer[at + 3], buffer[at + 4]
            payload = buffer[at + 9 : end]
            if kind == 4 and not flags & 0x1:
                self.transport.write(_frame(4, 0x1, 0, b""))  # type: ignore[union-attr]
            elif kind == 0:
                self.received += length
                if len(payload) > 5 and payload[5:].find(b"\x08\x02") == 0:
                    self.over += 1  # overall_code OVER_LIMIT (field 1 = 2)
            elif kind == 1:  # every block decoded: the server's table must stay in step
                fields = dict(self.decoder.decode(bytes(payload), raw=True))
                if flags & 0x1:  # the trailers (or a trailers-only error)
                    finished += 1
                    if fields.get(b"grpc-status") == b"0":
                        self.calls += 1
                    else:
                        self.errors += 1
            elif kind == 7:
                self.errors += 1
            at = end
        del buffer[:at]
        if self.received > 1 << 20:
            self.transport.write(_frame(8, 0, 0, struct.pack(">I", self.received)))  # type: ignore[union-attr]
            self.received = 0
        self.open -= finished
        if time.monotonic() < self.deadline:
            self._send(finished)
        elif self.open == 0 and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def main(port: int, domain: str, connections: int, in_flight: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    messages = _messages(domain)
    started = time.monotonic()
    deadline = started + seconds
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(
            lambda: _Client(messages, in_flight, deadline), "127.0.0.1", port
        )
        clients.append(client)
    await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), seconds + 30)
    elapsed = time.monotonic() - started
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    print(
        json.dumps(
            {
                "calls": sum(c.calls for c in clients),
                "seconds": elapsed,
                "errors": sum(c.errors for c in clients),
                "over_limit": sum(c.over for c in clients),
            }
        )
    )


if __name__ == "__main__":
    port, domain, connections, in_flight, seconds = sys.argv[1:6]
    asyncio.run(main(int(port), domain, int(connections), int(in_flight), float(seconds)))
