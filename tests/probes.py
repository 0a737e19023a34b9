"""Does a service answer at a URL? One probe per kind of service the suite talks to.

Each probe returns ``None`` when the service answers as the tests need it, else a short reason.
They speak the service's own protocol (a Redis PING, a PostgreSQL ``SELECT 1``, the AMQP
``Connection.Start`` greeting, the NATS ``INFO`` line with JetStream on), so a port held by
something else does not count as the service.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

__all__ = ["amqp_answers", "nats_answers", "postgres_answers", "redis_answers"]

TIMEOUT = 2.0


def redis_answers(url: str) -> str | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
    try:
        client.ping()
    except redis.RedisError as exc:
        return str(exc) or type(exc).__name__
    finally:
        client.close()
    return None


def postgres_answers(url: str) -> str | None:
    async def select_one() -> None:
        engine = create_async_engine(url, connect_args={"timeout": TIMEOUT})
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    try:
        # A thread and event loop of its own: probes also run where a test's loop is running.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, select_one()).result()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def amqp_answers(url: str) -> str | None:
    """The broker answers the AMQP 0-9-1 protocol header with ``Connection.Start`` (10, 10)."""

    def exchange(sock: socket.socket) -> str | None:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        frame = _read(sock, 11)
        return None if frame[0] == 1 and frame[7:11] == b"\x00\x0a\x00\x0a" else "not AMQP"

    return _talk(url, 5672, exchange)


def nats_answers(url: str) -> str | None:
    """The server greets with ``INFO {...}`` and that JSON says JetStream is on."""

    def exchange(sock: socket.socket) -> str | None:
        line = b""
        while not line.endswith(b"\r\n") and len(line) < 65536:
            line += _read(sock, 1)
        if not line.startswith(b"INFO "):
            return "not NATS"
        return None if json.loads(line[5:]).get("jetstream") is True else "JetStream is off"

    return _talk(url, 4222, exchange)


def _talk(
    url: str, default_port: int, exchange: Callable[[socket.socket], str | None]
) -> str | None:
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or default_port)
    try:
        with socket.create_connection(address, timeout=TIMEOUT) as sock:
            return exchange(sock)
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data
