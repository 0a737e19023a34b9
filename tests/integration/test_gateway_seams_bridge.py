"""The ASGI bridge: Starlette's ``is_disconnected()`` (which cancels a pending ``receive()``)
must not break a streaming response that follows it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from fastapi import Request
from fastapi.responses import StreamingResponse

from tests.integration.gateway_fixtures import backends, config_for, running_gateway


async def test_streaming_after_is_disconnected_is_complete() -> None:
    """A built-in endpoint that polls is_disconnected() then streams delivers every chunk."""
    async with backends(1) as started, running_gateway(config_for([started[0].url])) as gateway:
        app = gateway.runtime.app
        assert app is not None

        async def stream(request: Request) -> StreamingResponse:
            assert not await request.is_disconnected()

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(5):
                    yield b"chunk %d\n" % i
                    await asyncio.sleep(0)

            return StreamingResponse(chunks(), media_type="text/plain")

        app.add_api_route("/seams-stream", stream)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as http:
            for _ in range(2):  # and the keep-alive connection still serves the next one
                response = await http.get("/seams-stream")
                assert response.status_code == 200
                assert response.text == "".join(f"chunk {i}\n" for i in range(5))
