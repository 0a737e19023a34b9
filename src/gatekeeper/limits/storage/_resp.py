"""A lean Redis client for the one hot command: ``EVALSHA`` of the decide script.

redis-py spends about 4 us of CPU per decision on a batched ``EVALSHA`` (argument packing,
connection checkout, response callbacks); this client spends about 1 us: an asyncio Protocol
per connection, replies parsed by hiredis, commands written as one pre-framed RESP buffer, and
any number of commands pipelined on one connection (replies come back in order). It serves
single-node ``redis://`` stores only; everything else (TLS, Unix sockets, Sentinel, Cluster,
the admin commands) stays on redis-py.

A connection that breaks fails every command waiting on it with :class:`StorageError` and is
opened again by the next command. A caller that gives up (deadline, cancellation) leaves its
reply to be read and dropped, so the pipeline stays in step.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any

import hiredis

from gatekeeper.errors import StorageError, StorageTimeout

__all__ = ["LeanConnection", "LeanPool", "ReplyError", "command"]

ReplyError = hiredis.ReplyError


def command(*parts: str | bytes | int) -> bytes:
    """One RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def evalsha(sha: str, keys: Sequence[str], args: Sequence[str | int | bytes]) -> bytes:
    """``EVALSHA sha len(keys) *keys *args`` framed in one pass over the arguments."""
    numkeys = str(len(keys))
    text = [
        f"*{3 + len(keys) + len(args)}\r\n$7\r\nEVALSHA\r\n$40\r\n{sha}\r\n"
        f"${len(numkeys)}\r\n{numkeys}\r\n"
    ]
    out: list[bytes] = []
    for item in (*keys, *args):
        if type(item) is bytes:
            out.append("".join(text).encode())
            text = []
            out.append(b"$%d\r\n%s\r\n" % (len(item), item))
            continue
        value = item if type(item) is str else str(item)
        # Bulk lengths are in bytes: only non-ASCII text needs encoding to be measured.
        size = len(value) if value.isascii() else len(value.encode())
        text.append(f"${size}\r\n{value}\r\n")
    out.append("".join(text).encode())
    return b"".join(out)


class LeanConnection(asyncio.Protocol):
    """One pipelined connection: :meth:`call` writes a command, its future gets the reply."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.closed = False
        self.loop = asyncio.get_running_loop()

    @property
    def pending(self) -> int:
        """Commands written and not answered yet."""
        return len(self._waiters)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        waiters = self._waiters
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            future = waiters.popleft()
            if not future.done():  # its caller may have given up; the reply is dropped
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = StorageError(f"connection to Redis lost: {exc!r}" if exc else "Redis closed")
        if exc is not None:
            error.__cause__ = exc
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_exception(error)

    def call(self, payload: bytes) -> asyncio.Future[Any]:
        """Send one pre-framed command; the future resolves to hiredis's parsed reply (an error
        reply arrives as a :data:`ReplyError` value, not raised)."""
        if self.closed:
            raise StorageError("connection to Redis is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._transport.write(payload)
        return future

    def close(self) -> None:
        """Close the socket; waiting commands fail with :class:`StorageError`."""
        # A transport of a loop that is closed already cannot be closed any more.
        if self._transport is not None and not self.closed and not self.loop.is_closed():
            self._transport.close()
        self.closed = True


class LeanPool:
    """``size`` lean connections to one Redis, opened on first use and after a failure.

    ``setup`` are the commands each new connection runs first (AUTH, SELECT, CLIENT SETNAME).
    ``timeout`` bounds each reply (``StorageTimeout``), ``connect_timeout`` each connect.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        setup: Sequence[bytes] = (),
        size: int = 2,
        timeout: float | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.setup = list(setup)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._slots: list[LeanConnection | None] = [None] * size
        self._opening: list[asyncio.Future[LeanConnection] | None] = [None] * size

    async def call(self, payload: bytes) -> Any:
        """Send one command on the least busy connection; its reply (errors as values)."""
        connection = self._pick()
        if connection is None:
            connection = await self._open_some()
        future = connection.call(payload)
        if self.timeout is None:
            return await future
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError as exc:
            raise StorageTimeout(f"Redis did not answer within {self.timeout} s") from exc

    @property
    def opened(self) -> int:
        """How many of the pool's connections are open."""
        return sum(c is not None and not c.closed for c in self._slots)

    @property
    def size(self) -> int:
        return len(self._slots)

    async def open_all(self) -> None:
        """Open every connection of the pool now (each call opens the first missing one), so
        that :meth:`send` never finds one missing under traffic."""
        for _ in self._slots:
            reply = await self.call(command(b"PING"))
            if isinstance(reply, ReplyError):
                raise StorageError(f"Redis {self.host}:{self.port} refused PING: {reply}")

    def send(self, payload: bytes) -> asyncio.Future[Any] | None:
        """Write one command on an open connection now and return its reply's future (errors
        as values; no ``timeout``: the caller bounds it); None while a connection is missing
        (then :meth:`call` opens it)."""
        connection = self._pick()
        return None if connection is None else connection.call(payload)

    def _pick(self) -> LeanConnection | None:
        best: LeanConnection | None = None
        for index, connection in enumerate(self._slots):
            if connection is not None and not connection.loop.is_running():
                # Opened under an event loop that is not running (a second asyncio.run): unusable
                # here. (A pool serves one running loop; asking asyncio.get_running_loop() would
                # cost a getpid() system call per batch.)
                connection.close()
                self._slots[index] = None
                connection = None
            if connection is None or connection.closed:
                return None  # open the missing one first: spreads load once, then steady
            if best is None or connection.pending < best.pending:
                best = connection
        return best

    async def _open_some(self) -> LeanConnection:
        for index, connection in enumerate(self._slots):
            if connection is None or connection.closed:
                opening = self._opening[index]
                if opening is None:
                    # One connect per slot, shared by every caller that arrives meanwhile.
                    opening = asyncio.ensure_future(self._connect(index))
                    self._opening[index] = opening
                # A caller that gives up must not cancel the connect the others wait for.
                return await asyncio.shield(opening)
        return min((c for c in self._slots if c is not None), key=lambda c: c.pending)

    async def _connect(self, index: int) -> LeanConnection:
        loop = asyncio.get_running_loop()
        where = f"{self.host}:{self.port}"
        try:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    _, connection = await loop.create_connection(
                        LeanConnection, self.host, self.port
                    )
            except TimeoutError as exc:
                raise StorageTimeout(f"connecting to Redis at {where} timed out") from exc
            except OSError as exc:
                raise StorageError(f"cannot connect to Redis at {where}: {exc}") from exc
            try:
                for payload in self.setup:
                    # Bounded like any reply: a paused server accepts connections, answers none.
                    async with asyncio.timeout(self.timeout):
                        reply = await connection.call(payload)
                    if isinstance(reply, ReplyError):
                        raise StorageError(f"Redis at {where} refused connection setup: {reply}")
            except TimeoutError as exc:
                connection.close()
                raise StorageTimeout(f"Redis at {where} did not answer the setup") from exc
            except BaseException:
                connection.close()
                raise
        finally:
            self._opening[index] = None
        self._slots[index] = connection
        return connection

    def close(self) -> None:
        """Close every connection."""
        for index, connection in enumerate(self._slots):
            if connection is not None:
                connection.close()
            self._slots[index] = None


def lean_pool_from(connection_class: Any, options: dict[str, Any]) -> LeanPool | None:
    """A :class:`LeanPool` to the server of a redis-py connection class and its keyword
    arguments (a client's pool, a cluster node), when that is plain TCP (TLS and Unix sockets
    stay with redis-py: None). AUTH, SELECT and CLIENT SETNAME follow the options."""
    from redis.asyncio.connection import Connection

    if connection_class is not Connection:
        return None
    setup = []
    password = options.get("password")
    if password is not None:
        username = options.get("username")
        setup.append(
            command(b"AUTH", username, password) if username else command(b"AUTH", password)
        )
    if int(options.get("db") or 0):
        setup.append(command(b"SELECT", int(options["db"])))
    if options.get("client_name"):
        setup.append(command(b"CLIENT", b"SETNAME", options["client_name"]))
    return LeanPool(
        options.get("host", "localhost"),
        int(options.get("port", 6379)),
        setup=setup,
        timeout=options.get("socket_timeout"),
        connect_timeout=options.get("socket_connect_timeout"),
    )
