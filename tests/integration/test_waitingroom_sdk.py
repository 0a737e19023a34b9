"""The Python backend SDK against a real server: verify and finish, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gatekeeper.gateway.flow.flow import Flow
from gatekeeper.gateway.http.server import Server
from gatekeeper.redis_client import redis_from_url
from gatekeeper.sdk.waitingroom import (
    AsyncWaitingRoomClient,
    WaitingRoomClient,
    WaitingRoomUnavailable,
)
from gatekeeper.testing import FakeClock
from gatekeeper.waitingroom.config_repository import MemoryConfigRepository
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.testing import TEST_TENANT_KEY, WaitingRoom, build, patient_guard
from tests.servers import free_port

pytestmark = pytest.mark.redis

T = "shop"


@pytest.fixture
async def served(
    redis_prefix: str, fake_clock: FakeClock, any_redis_url: str
) -> AsyncIterator[tuple[WaitingRoom, str]]:
    """The waiting room's endpoints over HTTP, its store on one Redis or on a cluster."""
    client = redis_from_url(any_redis_url)
    room = build(
        RedisStore(client, prefix=redis_prefix, guard=patient_guard()),
        MemoryConfigRepository({T: [TEST_TENANT_KEY]}),
        fake_clock,
    )
    server = Server(
        Flow.for_endpoints(room.dispatcher), host="127.0.0.1", port=free_port(), shutdown_grace=1.0
    )
    await server.start()
    try:
        yield room, f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()
        await client.aclose()


async def _ready_token(room: WaitingRoom, user: str) -> str:
    token = (await room.service.enqueue(T, user)).jwt
    room.service.clock.advance(5)  # type: ignore[attr-defined]
    await room.worker.run_once()
    return token


async def test_async_client_verifies_and_finishes_once(served: tuple[WaitingRoom, str]) -> None:
    """Async SDK: a ready token verifies, finish clears it, then it neither verifies nor clears."""
    room, url = served
    token = await _ready_token(room, "alice")
    sdk = AsyncWaitingRoomClient(url, TEST_TENANT_KEY)
    assert (await sdk.verify(token)).ready
    finished = await sdk.finish(token)
    assert finished.cleared
    assert finished.status_text == "ready_cleared"
    assert not (await sdk.verify(token)).ready
    again = await sdk.finish(token)
    assert not again.cleared
    assert again.status_text == "not_ready"
    i = len(token) - 10  # inside the signature, away from the padding bits of the last char
    forged = await sdk.verify(token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :])
    assert not forged.ready
    assert forged.status == 401


async def test_sync_client_verifies_and_finishes(served: tuple[WaitingRoom, str]) -> None:
    """Sync SDK (http.client): same behaviour as the async one; the public id gets 403."""
    room, url = served
    token = await _ready_token(room, "bob")
    queued = (await room.service.enqueue(T, "carol")).jwt
    sdk = WaitingRoomClient(url, TEST_TENANT_KEY)
    assert (await asyncio.to_thread(sdk.verify, token)).ready
    assert not (await asyncio.to_thread(sdk.verify, queued)).ready
    # The public id (what browsers send) cannot verify: 403, saying which key is needed.
    public = await asyncio.to_thread(WaitingRoomClient(url, T).verify, token)
    assert (public.ready, public.status) == (False, 403)
    assert "secret key" in public.message
    assert (await asyncio.to_thread(sdk.finish, token)).cleared
    assert not (await asyncio.to_thread(sdk.verify, token)).ready


async def test_unreachable_service_raises() -> None:
    """Both clients raise WaitingRoomUnavailable when nothing listens."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(WaitingRoomUnavailable):
        await AsyncWaitingRoomClient(url, T, timeout=1).verify("x")
    with pytest.raises(WaitingRoomUnavailable):
        await asyncio.to_thread(WaitingRoomClient(url, T, timeout=1).verify, "x")
