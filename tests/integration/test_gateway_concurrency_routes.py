"""A concurrency policy on a route: a lease held for the life of each request, on every way a
request is served, given back however it ends (answer, upstream error, timeout, client abort),
exact across replicas sharing Redis."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.integration.gateway_fixtures import ScriptedUpstream, config_for, running_gateway

pytestmark = pytest.mark.redis

# The ways a request is served: relayed on callbacks (GET), a body streamed upstream in a task
# (chunked POST), an answer through a response object (compression), the cache's way.
WAYS = ["relay", "streamed_body", "compressed", "cached"]


class HeldUpstream:
    """An upstream that answers each request only when told to (``release``)."""

    def __init__(self) -> None:
        self.arrived = 0
        self.gates: list[asyncio.Event] = []
        self.seen = asyncio.Condition()
        self.mode = "answer"  # or "close" (drop the connection) or "silent" (never answer)

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"transfer-encoding: chunked" in head.lower():
                while not (await reader.readuntil(b"\r\n")).startswith(b"0\r\n"):
                    await reader.readuntil(b"\r\n")
                await reader.readuntil(b"\r\n")
            gate = asyncio.Event()
            self.gates.append(gate)
            async with self.seen:
                self.arrived += 1
                self.seen.notify_all()
            await gate.wait()
            if self.mode == "close":
                writer.transport.abort()
                return
            body = b"held" * 64
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncache-control: no-store\r\n"
                b"content-length: %d\r\n\r\n%b" % (len(body), body)
            )
            await writer.drain()

    async def wait_arrived(self, count: int) -> None:
        async with self.seen:
            await asyncio.wait_for(self.seen.wait_for(lambda: self.arrived >= count), 5)

    def release_all(self) -> None:
        for gate in self.gates:
            gate.set()


def _config(url: str, way: str, prefix: str, *, read_timeout: float = 30) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": "api",
        "path_prefix": "/api",
        "upstream": "backends",
        "timeouts": {"read": read_timeout, "total": 60},
        "retry": {"attempts": 1},
    }
    if way == "compressed":
        route["compress"] = {"min_bytes": 1}
    if way == "cached":
        route["cache"] = True
    # The policy is named after the test's Redis prefix: its keys are removed afterwards.
    route["limits"] = [{"policy": prefix, "key": "ip"}]
    return config_for(
        [url],
        policies={prefix: {"rate": "2/second", "algorithm": "concurrency"}},
        routes=[route],
        # A loaded machine can be slower than the 20 ms default: never fail open here.
        limiter={"deadline": 2.0},
    )


_SENT = itertools.count()


async def _send(port: int, way: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # A path of its own per request: the cache would collapse identical misses into one.
    path = b"/api/x%d" % next(_SENT)
    if way == "streamed_body":
        writer.write(
            b"POST %b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n" % path
        )
    else:
        extra = b"Accept-Encoding: gzip\r\n" if way == "compressed" else b""
        writer.write(b"GET %b HTTP/1.1\r\nHost: t\r\n%b\r\n" % (path, extra))
    await writer.drain()
    return reader, writer


async def _status(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return int(head.split(b" ", 2)[1]), head


@asynccontextmanager
async def _gateway(
    up: HeldUpstream, way: str, redis_url: str, prefix: str, **kw: Any
) -> AsyncIterator[tuple[ScriptedUpstream, Any]]:
    async with (
        ScriptedUpstream(up.handler) as scripted,
        running_gateway(_config(scripted.url, way, prefix, **kw), redis_url=redis_url) as gw,
    ):
        yield scripted, gw


@pytest.mark.parametrize("way", WAYS)
async def test_two_leases_then_429_and_the_lease_comes_back_with_the_answer(
    way: str, redis_url: str, redis_prefix: str
) -> None:
    """Two requests hold the two slots; a third gets 429 with Retry-After; once they are
    answered, a new request gets a slot again."""
    up = HeldUpstream()
    async with _gateway(up, way, redis_url, redis_prefix) as (_, gw):
        port = gw.server.port
        held = [await _send(port, way) for _ in range(2)]
        await up.wait_arrived(2)
        reader, writer = await _send(port, way)
        status, head = await _status(reader)
        writer.close()
        assert status == 429
        assert b"retry-after: " in head.lower()
        up.release_all()
        for reader, writer in held:
            assert (await _status(reader))[0] == 200
            writer.close()
        reader, writer = await _send(port, way)
        await up.wait_arrived(3)
        up.release_all()
        assert (await _status(reader))[0] == 200
        writer.close()


@pytest.mark.parametrize("way", WAYS)
async def test_a_client_that_leaves_gives_its_lease_back(
    way: str, redis_url: str, redis_prefix: str
) -> None:
    """Both slots held; one client goes away: its lease is released, a newcomer passes."""
    up = HeldUpstream()
    async with _gateway(up, way, redis_url, redis_prefix) as (_, gw):
        port = gw.server.port
        held = [await _send(port, way) for _ in range(2)]
        await up.wait_arrived(2)
        held[0][1].transport.abort()
        for _ in range(100):  # the release is written in the background: poll, bounded
            reader, writer = await _send(port, way)
            arrived = asyncio.ensure_future(up.wait_arrived(3))
            status_task = asyncio.ensure_future(_status(reader))
            done, _ = await asyncio.wait(
                (arrived, status_task), return_when=asyncio.FIRST_COMPLETED
            )
            if arrived in done:
                status_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await status_task
                break
            arrived.cancel()
            assert status_task.result()[0] == 429
            writer.close()
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the lease of the client that left was never given back")
        up.release_all()
        assert (await _status(reader))[0] == 200
        writer.close()
        held[1][1].close()


@pytest.mark.parametrize("failure", ["upstream_error", "timeout"])
async def test_a_failed_request_gives_its_lease_back(
    failure: str, redis_url: str, redis_prefix: str
) -> None:
    """A request that ends in 502 (the upstream dropped it) or 504 (it did not answer in time)
    releases its lease: two such failures, then two requests pass again."""
    up = HeldUpstream()
    timeout = 0.3 if failure == "timeout" else 30
    async with _gateway(up, "relay", redis_url, redis_prefix, read_timeout=timeout) as (_, gw):
        port = gw.server.port
        if failure == "upstream_error":
            up.mode = "close"
        held = [await _send(port, "relay") for _ in range(2)]
        await up.wait_arrived(2)
        if failure == "upstream_error":
            up.release_all()
        expected = 502 if failure == "upstream_error" else 504
        for reader, writer in held:
            assert (await _status(reader))[0] == expected
            writer.close()
        up.mode = "answer"
        up.release_all()
        await asyncio.sleep(0.05)  # the releases are written in the background
        again = [await _send(port, "relay") for _ in range(2)]
        await up.wait_arrived(4)
        up.release_all()
        for reader, writer in again:
            assert (await _status(reader))[0] == 200
            writer.close()


async def test_the_limit_is_exact_across_two_replicas(redis_url: str, redis_prefix: str) -> None:
    """Two gateways sharing Redis: six concurrent requests, split over both, get exactly two
    slots."""
    up = HeldUpstream()
    async with (
        ScriptedUpstream(up.handler) as scripted,
        running_gateway(_config(scripted.url, "relay", redis_prefix), redis_url=redis_url) as one,
        running_gateway(_config(scripted.url, "relay", redis_prefix), redis_url=redis_url) as two,
    ):
        sent = [await _send(gw.server.port, "relay") for gw in (one, two, one, two, one, two)]
        await up.wait_arrived(2)
        refused = []
        for reader, _ in sent:
            status = asyncio.ensure_future(_status(reader))
            await asyncio.wait((status,), timeout=1.0)
            if status.done():
                refused.append(status.result()[0])
            else:
                status.cancel()
        assert refused == [429] * 4
        assert up.arrived == 2
        up.release_all()
        for _, writer in sent:
            writer.close()
