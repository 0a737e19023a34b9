"""A real Chromium waits on the hosted page, watches its position advance, lands on the page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from playwright.async_api import async_playwright, expect

from gatekeeper.endpoints import Call, Endpoint, Reply
from gatekeeper.gateway.flow.flow import Flow
from gatekeeper.gateway.http.server import Server
from gatekeeper.testing import FakeClock
from gatekeeper.waitingroom.config import WaitingRoomSettings
from gatekeeper.waitingroom.config_repository import MemoryConfigRepository
from gatekeeper.waitingroom.gate import WaitingRoomGate
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.testing import WaitingRoom, build, patient_guard
from tests import services
from tests.servers import free_port, tool

pytestmark = [pytest.mark.browser, pytest.mark.redis]

T = "shop"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@dataclass
class Site:
    room: WaitingRoom
    url: str
    clock: FakeClock


@pytest.fixture
async def site(redis_prefix: str, fake_clock: FakeClock) -> AsyncIterator[Site]:
    """The waiting room plus a page it protects, served by Gatekeeper's own HTTP server."""
    client = aioredis.Redis.from_url(services.redis_url())
    repository = MemoryConfigRepository([T])
    config = await repository.get(T)
    assert config is not None
    await repository.save(T, config.updated({"admission_limit": 1}))
    settings = WaitingRoomSettings(
        sse_interval_seconds=0.1, poll_min_seconds=0.2, poll_max_seconds=0.3, config_cache_seconds=0
    )
    room = build(
        RedisStore(client, prefix=redis_prefix, guard=patient_guard()),
        repository,
        fake_clock,
        settings=settings,
    )
    gate = WaitingRoomGate(room.service, T)

    async def protected(call: Call) -> Reply:
        query = call.query_string.decode("latin-1")
        target = call.path + (f"?{query}" if query else "")
        decision = await gate.check_headers(call.headers, target)
        if not decision.allowed:
            assert decision.redirect is not None
            return Reply(302, [(b"location", decision.redirect.encode("latin-1"))])
        page = b"<h1 id='welcome'>Protected checkout</h1>"
        return Reply(200, [(b"content-type", b"text/html; charset=utf-8")], page)

    room.dispatcher.add(Endpoint("GET", "/protected", protected))
    flow = Flow.for_endpoints(room.dispatcher)
    server = Server(flow, host="127.0.0.1", port=free_port(), shutdown_grace=1.0)
    await server.start()
    try:
        yield Site(room, f"http://127.0.0.1:{server.port}", fake_clock)
    finally:
        await server.stop()
        await client.aclose()


async def _visit(site: Site, *, sse: bool) -> None:
    """Two visitors ahead; each tick moves the page's position down until it lands."""
    for user in ("ahead-1", "ahead-2"):
        await site.room.service.enqueue(T, user)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=tool("chromium"), args=ARGS)
        try:
            page = await browser.new_page()
            paths: list[str] = []
            page.on("request", lambda request: paths.append(request.url.split("?")[0]))
            if not sse:
                await page.add_init_script("delete window.EventSource;")
            await page.goto(f"{site.url}/protected?item=42")
            assert "/queue/wait" in page.url
            position = page.get_by_test_id("position")
            await expect(position).to_have_text("3", timeout=15_000)
            await expect(page.get_by_test_id("eta")).to_contain_text("Estimated wait")
            assert await page.get_by_role("status").count() == 1
            for expected in ("2", "1"):
                site.clock.advance(5)
                await site.room.worker.run_once()
                await expect(position).to_have_text(expected, timeout=15_000)
            site.clock.advance(5)
            await site.room.worker.run_once()
            await page.wait_for_url(f"{site.url}/protected?item=42", timeout=15_000)
            await expect(page.locator("#welcome")).to_have_text("Protected checkout")
            streams = sum(p.endswith("/queue/events") for p in paths)
            polls = sum(p.endswith("/queue/status") for p in paths)
            assert (streams > 0, polls > 0) == ((True, False) if sse else (False, True))
        finally:
            await browser.close()


async def test_waiting_page_shows_position_advances_and_lands(site: Site) -> None:
    """With Server-Sent Events: position 3, 2, 1, then the protected page."""
    await _visit(site, sse=True)


async def test_waiting_page_falls_back_to_polling(site: Site) -> None:
    """Without EventSource the client polls at the advised interval and lands all the same."""
    await _visit(site, sse=False)
