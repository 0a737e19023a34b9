"""Streaming answers of the endpoint table on the gateway's listener: complete, reusable
connections, and a producer stopped when its client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from gatekeeper.endpoints import Call, Endpoint, StreamReply
from tests.integration.gateway_fixtures import backends, config_for, running_gateway


async def test_a_stream_is_complete_and_the_connection_serves_the_next_request() -> None:
    """A built-in endpoint that checks is_disconnected() then streams delivers every chunk,
    and the keep-alive connection still serves the next request."""
    async with backends(1) as started, running_gateway(config_for([started[0].url])) as gateway:

        def stream(call: Call) -> StreamReply:
            assert not call.is_disconnected()

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(5):
                    yield b"chunk %d\n" % i
                    await asyncio.sleep(0)

            return StreamReply(200, [(b"content-type", b"text/plain")], chunks())

        gateway.runtime.dispatcher.add(Endpoint("GET", "/seams-stream", stream))
        async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as http:
            for _ in range(2):
                response = await http.get("/seams-stream")
                assert response.status_code == 200
                assert response.text == "".join(f"chunk {i}\n" for i in range(5))


async def test_a_stream_whose_client_leaves_is_closed() -> None:
    """When the client disconnects, the producer waiting for its next event is stopped."""
    closed = asyncio.Event()
    async with backends(1) as started, running_gateway(config_for([started[0].url])) as gateway:

        def forever(call: Call) -> StreamReply:
            async def chunks() -> AsyncIterator[bytes]:
                try:
                    yield b"data: first\n\n"
                    await asyncio.Event().wait()  # an event that never comes
                    yield b"never"
                finally:
                    closed.set()

            return StreamReply(200, [(b"content-type", b"text/event-stream")], chunks())

        gateway.runtime.dispatcher.add(Endpoint("GET", "/seams-forever", forever))
        async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as http:  # noqa: SIM117
            async with http.stream("GET", "/seams-forever") as response:
                first = await asyncio.wait_for(anext(response.aiter_bytes()), 5)
        assert first == b"data: first\n\n"
        await asyncio.wait_for(closed.wait(), 5)
