"""A small gRPC server for unary calls: HTTP/2 over cleartext TCP (prior knowledge, as Envoy's
gRPC clusters speak it), on the process's own event loop.

Why not grpcio's asyncio server: measured here, it costs about 450 us of CPU per unary call
before any servicer code runs (a wake-up of its poller thread per operation, a syscall per
frame); a rate limit service has to answer tens of thousands of calls a second. This server
does what Envoy's calls need and no more, on a plain asyncio Protocol:

- a connection: the client preface, SETTINGS (acknowledged), PING, WINDOW_UPDATE in both
  directions, RST_STREAM, GOAWAY; request headers decoded with ``hpack`` (every block, so the
  dynamic table stays in step);
- a call: HEADERS (``:path``), DATA (one length-prefixed message, uncompressed), the handler
  of the path answers (at once, or through a future: no task per call), the answer goes out as
  HEADERS + DATA + trailers (``grpc-status``), or trailers only for an error;
- every frame written in one loop turn goes out in one write.

Handlers take the request message's bytes and return the answer's bytes (or a future of
them); :class:`GrpcError` is a gRPC status. Streaming calls are not supported
(UNIMPLEMENTED), nor compressed messages (UNIMPLEMENTED).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from hpack import Decoder
from hpack.exceptions import HPACKError

__all__ = ["GrpcError", "Handler", "NativeGrpcServer"]

logger = logging.getLogger("gatekeeper.envoy.h2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS = 0, 1, 2, 3, 4
_PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 5, 6, 7, 8, 9
_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY_FLAG = 0x20
_NO_ERROR, _PROTOCOL_ERROR, _INTERNAL_ERROR, _FLOW_CONTROL_ERROR = 0, 1, 2, 3
_FRAME_SIZE_ERROR, _COMPRESSION_ERROR = 6, 9
_MAX_WINDOW = 2**31 - 1
_OUR_WINDOW = 1 << 24  # what we let each stream and the connection send before an update
_MAX_STREAMS = 4096
_MAX_MESSAGE = 4 << 20  # a request message larger than this is refused

# The answer's head: :status 200 (static index 8), content-type: application/grpc (a literal
# without indexing, name from static index 31); nothing enters our peer's dynamic table.
_RESPONSE_HEAD = b"\x88\x0f\x10\x10application/grpc"
_UNPACK = struct.Struct(">I").unpack_from


def _table_state(table: Any) -> tuple[int, int, int]:
    """What tells whether decoding a block changed hpack's dynamic table: an added entry is a
    new first tuple, an eviction or a size update changes the length or the size."""
    entries = table.dynamic_entries
    return len(entries), id(entries[0]) if entries else 0, table.maxsize


Handler = Callable[[bytes], "bytes | Awaitable[bytes]"]


class GrpcError(Exception):
    """A call's failure as a gRPC status (``code``: 3 INVALID_ARGUMENT, 12 UNIMPLEMENTED...)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with ``first``'s high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header field as a literal without indexing, with a new name, no Huffman coding."""
    return b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream)
        + payload
    )


_OK_TRAILERS = _frame(_HEADERS, _END_STREAM | _END_HEADERS, 0, _literal(b"grpc-status", b"0"))


def _trailers(stream: int, code: int, message: str) -> bytes:
    block = _literal(b"grpc-status", str(code).encode())
    if message:
        block += _literal(b"grpc-message", quote(message, safe=" !#$&'()*+,/:;=?@[]~").encode())
    return _frame(_HEADERS, _END_STREAM | _END_HEADERS, stream, block)


class _Stream:
    __slots__ = ("data", "path", "window")

    def __init__(self, path: bytes, window: int) -> None:
        self.path = path
        self.data = bytearray()
        self.window = window


class _Connection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: NativeGrpcServer) -> None:
        self.server = server
        self.handlers = server.handlers
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.preface = False
        self.decoder = Decoder()
        self.known: dict[bytes, bytes] = {}  # a header block that changed no table -> :path
        self.streams: dict[int, _Stream] = {}
        self.last_stream = 0
        self.headers_stream = 0  # a header block continues in CONTINUATION frames
        self.headers_block = bytearray()
        self.headers_flags = 0
        self.out: list[bytes] = []
        self.send_window = 65535
        self.initial_window = 65535
        self.max_frame = 16384
        self.received = 0
        self.pending: list[tuple[int, bytes]] = []  # answers waiting for send window
        self.in_flight = 0
        self.closing = False
        self.loop = asyncio.get_running_loop()

    # -- the transport -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        settings = struct.pack(">HIHIHI", 0x3, _MAX_STREAMS, 0x4, _OUR_WINDOW, 0x2, 0)
        self._send(_frame(_SETTINGS, 0, 0, settings))
        self._send(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", _OUR_WINDOW - 65535)))

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server.connections.discard(self)
        if not server.connections and server.idle is not None:
            server.idle.set()
        self.streams.clear()
        self.transport = None

    def _send(self, data: bytes) -> None:
        out = self.out
        if not out:
            self.loop.call_soon(self._flush)
        out.append(data)

    def _flush(self) -> None:
        out = self.out
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            transport.write(b"".join(out))
        out.clear()

    def _fail(self, code: int, why: str) -> None:
        logger.warning("grpc connection closed: %s", why)
        self._send(_frame(_GOAWAY, 0, 0, struct.pack(">II", self.last_stream, code)))
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def goaway(self) -> None:
        """No new calls on this connection (the server is stopping)."""
        if not self.closing and self.transport is not None:
            self.closing = True
            self._send(_frame(_GOAWAY, 0, 0, struct.pack(">II", self.last_stream, _NO_ERROR)))
            if not self.in_flight:
                self._flush()
                self.transport.close()

    # -- frames in -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.preface:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(bytes(buffer)):
                    self._fail(_PROTOCOL_ERROR, "not an HTTP/2 client preface")
                return
            if not buffer.startswith(PREFACE):
                self._fail(_PROTOCOL_ERROR, "not an HTTP/2 client preface")
                return
            del buffer[: len(PREFACE)]
            self.preface = True
        at = 0
        size = len(buffer)
        try:
            while size - at >= 9:
                length = _UNPACK(buffer, at)[0] >> 8
                if length > 1 << 20:
                    self._fail(_FRAME_SIZE_ERROR, "frame too large")
                    return
                end = at + 9 + length
                if end > size:
                    break
                kind = buffer[at + 3]
                flags = buffer[at + 4]
                stream = _UNPACK(buffer, at + 5)[0] & 0x7FFFFFFF
                self._frame_in(kind, flags, stream, bytes(buffer[at + 9 : end]))
                if self.transport is None:
                    return
                at = end
        except _ProtocolError as exc:
            self._fail(exc.code, str(exc))
            return
        del buffer[:at]

    def _frame_in(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if self.headers_stream and kind != _CONTINUATION:
            raise _ProtocolError(_PROTOCOL_ERROR, "a header block was interrupted")
        if kind == _DATA:
            self._data(flags, stream, payload)
        elif kind == _HEADERS:
            self._headers(flags, stream, payload)
        elif kind == _CONTINUATION:
            if stream != self.headers_stream:
                raise _ProtocolError(_PROTOCOL_ERROR, "CONTINUATION of no header block")
            self.headers_block += payload
            if flags & _END_HEADERS:
                self._header_block_done()
        elif kind == _SETTINGS:
            if not flags & _ACK:
                self._settings(payload)
                self._send(_frame(_SETTINGS, _ACK, 0))
        elif kind == _PING:
            if not flags & _ACK:
                self._send(_frame(_PING, _ACK, 0, payload))
        elif kind == _WINDOW_UPDATE:
            self._window_update(stream, payload)
        elif kind == _RST_STREAM:
            self.streams.pop(stream, None)
        elif kind == _GOAWAY:
            self.closing = True
        elif kind == _PUSH_PROMISE:
            raise _ProtocolError(_PROTOCOL_ERROR, "a client may not push")
        # PRIORITY and unknown frame types are ignored (RFC 9113 5.5).

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ProtocolError(_FRAME_SIZE_ERROR, "SETTINGS of a bad size")
        for at in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, at)
            if key == 0x4:  # INITIAL_WINDOW_SIZE: applies to the open streams too
                if value > _MAX_WINDOW:
                    raise _ProtocolError(_FLOW_CONTROL_ERROR, "window too large")
                delta = value - self.initial_window
                self.initial_window = value
                for open_stream in self.streams.values():
                    open_stream.window += delta
            elif key == 0x5:  # MAX_FRAME_SIZE
                self.max_frame = value
        self._drain_pending()

    def _window_update(self, stream: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ProtocolError(_FRAME_SIZE_ERROR, "WINDOW_UPDATE of a bad size")
        increment = _UNPACK(payload)[0] & 0x7FFFFFFF
        if stream == 0:
            self.send_window += increment
        else:
            open_stream = self.streams.get(stream)
            if open_stream is not None:
                open_stream.window += increment
        self._drain_pending()

    def _headers(self, flags: int, stream: int, payload: bytes) -> None:
        if stream == 0 or stream % 2 == 0:
            raise _ProtocolError(_PROTOCOL_ERROR, "HEADERS on a stream a client may not open")
        if flags & _PADDED:
            pad = payload[0]
            payload = payload[1 : len(payload) - pad]
        if flags & _PRIORITY_FLAG:
            payload = payload[5:]
        self.headers_stream = stream
        self.headers_flags = flags
        self.headers_block = bytearray(payload)
        if flags & _END_HEADERS:
            self._header_block_done()

    def _header_block_done(self) -> None:
        stream = self.headers_stream
        flags = self.headers_flags
        self.headers_stream = 0
        block = bytes(self.headers_block)
        # A block that changed no table entry means the same again while the table stays as
        # it is: Envoy sends the same block for every call after its first on a connection
        # (its :path as a literal without indexing), and decoding each would cost a tenth of a
        # call. Any block that changes the table forgets what was known.
        path = self.known.get(block)
        if path is None:
            table = self.decoder.header_table
            before = _table_state(table)
            try:
                headers = self.decoder.decode(block, raw=True)
            except HPACKError as exc:
                raise _ProtocolError(_COMPRESSION_ERROR, f"bad header block: {exc}") from None
            path = b""
            for name, value in headers:
                if name == b":path":
                    path = value
                    break
            if _table_state(table) != before:
                self.known.clear()  # indexes may mean other fields now
            elif len(self.known) < 64:
                self.known[block] = path
        open_stream = self.streams.get(stream)
        if open_stream is None:
            if stream <= self.last_stream:
                return  # trailers of a stream already answered or reset
            self.last_stream = stream
            if len(self.streams) >= _MAX_STREAMS:  # more than SETTINGS said: refused, retried
                self._send(_frame(_RST_STREAM, 0, stream, struct.pack(">I", 7)))
                return
            open_stream = self.streams[stream] = _Stream(path, self.initial_window)
        if flags & _END_STREAM:
            self._call(stream, open_stream)

    def _data(self, flags: int, stream: int, payload: bytes) -> None:
        if flags & _PADDED:
            pad = payload[0]
            payload = payload[1 : len(payload) - pad]
        self.received += len(payload)
        if self.received >= _OUR_WINDOW // 2:  # give the connection's window back
            self._send(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self.received)))
            self.received = 0
        open_stream = self.streams.get(stream)
        if open_stream is None:
            return  # reset, or answered early
        open_stream.data += payload
        if len(open_stream.data) > _MAX_MESSAGE + 5:
            self.streams.pop(stream, None)
            self._send(_trailers(stream, 8, "request message too large"))
            return
        if flags & _END_STREAM:
            self._call(stream, open_stream)

    # -- calls ---------------------------------------------------------------------------

    def _call(self, stream: int, call: _Stream) -> None:
        if self.closing:
            self.streams.pop(stream, None)
            self._send(_frame(_RST_STREAM, 0, stream, struct.pack(">I", 7)))  # REFUSED_STREAM
            return
        handler = self.handlers.get(call.path)
        if handler is None:
            self._error(stream, 12, f"unknown method {call.path.decode('latin-1')}")
            return
        data = call.data
        if len(data) < 5 or data[0] != 0 or _UNPACK(data, 1)[0] != len(data) - 5:
            why = "compressed messages are not supported" if data[:1] == b"\x01" else None
            if why is not None:
                self._error(stream, 12, why)
            else:
                self._error(stream, 13, "the request is not one length-prefixed message")
            return
        try:
            answer = handler(bytes(data[5:]))
        except GrpcError as exc:
            self._error(stream, exc.code, exc.message)
            return
        except Exception:
            logger.exception("grpc handler failed")
            self._error(stream, 13, "internal error")
            return
        if type(answer) is bytes:
            self._answer(stream, answer)
            return
        future = answer if asyncio.isfuture(answer) else asyncio.ensure_future(answer)  # type: ignore[arg-type]
        self.in_flight += 1
        future.add_done_callback(lambda done: self._landed(stream, done))

    def _landed(self, stream: int, future: asyncio.Future[bytes]) -> None:
        self.in_flight -= 1
        try:
            answer = future.result()
        except GrpcError as exc:
            self._error(stream, exc.code, exc.message)
        except asyncio.CancelledError:
            self._error(stream, 1, "cancelled")
        except Exception:
            logger.exception("grpc handler failed")
            self._error(stream, 13, "internal error")
        else:
            self._answer(stream, answer)
        if self.closing and not self.in_flight and self.transport is not None:
            self._flush()
            self.transport.close()

    def _answer(self, stream: int, message: bytes) -> None:
        call = self.streams.get(stream)
        if call is None:
            return  # reset meanwhile
        body = b"\x00" + struct.pack(">I", len(message)) + message
        if self.pending or len(body) > min(self.send_window, call.window):
            self.pending.append((stream, body))
            return
        self._write_answer(stream, call, body)

    def _write_answer(self, stream: int, call: _Stream, body: bytes) -> None:
        self.send_window -= len(body)
        call.window -= len(body)
        del self.streams[stream]
        head = _frame(_HEADERS, _END_HEADERS, stream, _RESPONSE_HEAD)
        step = self.max_frame
        chunks = [
            _frame(_DATA, 0, stream, body[at : at + step]) for at in range(0, len(body), step)
        ]
        trailers = _OK_TRAILERS[:5] + struct.pack(">I", stream) + _OK_TRAILERS[9:]
        self._send(b"".join((head, *chunks, trailers)))

    def _drain_pending(self) -> None:
        pending = self.pending
        while pending:
            stream, body = pending[0]
            call = self.streams.get(stream)
            if call is None:
                pending.pop(0)
                continue
            if len(body) > min(self.send_window, call.window):
                return
            pending.pop(0)
            self._write_answer(stream, call, body)

    def _error(self, stream: int, code: int, message: str) -> None:
        if self.streams.pop(stream, None) is None:
            return
        head = _RESPONSE_HEAD + _literal(b"grpc-status", str(code).encode())
        if message:
            encoded = quote(message, safe=" !#$&'()*+,/:;=?@[]~").encode()
            head += _literal(b"grpc-message", encoded)
        self._send(_frame(_HEADERS, _END_STREAM | _END_HEADERS, stream, head))


class _ProtocolError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class NativeGrpcServer:
    """``await NativeGrpcServer(host, port, handlers).start()`` then ``stop(grace)``;
    ``handlers`` maps a method path (``/package.Service/Method``) to its :data:`Handler`."""

    def __init__(self, host: str, port: int, handlers: Mapping[str, Handler]) -> None:
        self.host = host
        self.port = port
        self.handlers = {path.encode("latin-1"): handler for path, handler in handlers.items()}
        self.connections: set[_Connection] = set()
        self.idle: asyncio.Event | None = None  # set when the last connection closes
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen (``port`` 0 picks a free one, then :attr:`port` says which)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_port=True, backlog=1024
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace: float) -> None:
        """Stop accepting, GOAWAY every connection, let calls in flight finish for up to
        ``grace`` seconds, then close what is left."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self.connections):
            connection.goaway()
        if self.connections:
            self.idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), grace)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        if server is not None:
            await server.wait_closed()
