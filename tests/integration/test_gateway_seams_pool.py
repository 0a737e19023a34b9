"""Pool accounting seams: an abandoned upstream attempt gives back its in-flight slot."""

from __future__ import annotations

import asyncio
import contextlib

from gatekeeper.gateway.http.messages import Body, ProxyRequest
from gatekeeper.gateway.upstream.forward import fetch
from tests.integration.gateway_fixtures import config_for, running_gateway


async def test_cancelled_forward_releases_the_in_flight_slot() -> None:
    """A forward cancelled while the upstream is silent leaves the endpoint's in-flight count
    where it was (it used to leak one per cancelled request, skewing least-connections)."""
    arrived = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        arrived.set()  # ... and never answer

    upstream = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    try:
        async with running_gateway(config_for([f"http://127.0.0.1:{port}"])) as gateway:
            state = gateway.runtime.snapshot
            assert state is not None
            route = state.router.routes[0]
            (endpoint,) = state.pools["backends"].endpoints
            request = ProxyRequest(
                "GET", b"/api/x", "/api/x", [], Body.of(b""),
                host="example.com", client_ip="127.0.0.1", peer_ip="127.0.0.1", route=route,
            )  # fmt: skip
            task = asyncio.create_task(fetch(state.proxy, request))
            await asyncio.wait_for(arrived.wait(), 5)
            assert endpoint.in_flight == 1
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert endpoint.in_flight == 0
    finally:
        for writer in writers:
            writer.close()
        upstream.close()
