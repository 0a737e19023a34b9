"""A gateway route protected by a waiting room: redirect to the page, then through once ready."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.gateway.config import parse_config
from gatekeeper.persistence.db import Database
from gatekeeper.persistence.migrate import upgrade
from gatekeeper.settings import Settings
from gatekeeper.waitingroom.gate import cookie_name
from tests.integration.gateway_fixtures import backends, config_for

pytestmark = pytest.mark.redis

T = "shop"


async def test_protected_route_sends_visitors_to_the_waiting_page_then_through(
    tmp_path, monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_prefix: str
) -> None:  # type: ignore[no-untyped-def]
    """No token -> 302 to /queue/wait with the way back; queued -> still 302; ready -> proxied."""
    monkeypatch.setenv("GATEKEEPER_WAITINGROOM_EMBEDDED_WORKER", "false")
    monkeypatch.setenv("GATEKEEPER_WAITINGROOM_REDIS_PREFIX", redis_prefix)
    # Not about outages: a loaded machine's pauses must not look like a dead Redis.
    monkeypatch.setenv("GATEKEEPER_WAITINGROOM_STORE_DEADLINE_SECONDS", "2")
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}"
    database = Database(database_url)
    await upgrade(database)
    await database.aclose()
    settings = Settings(
        redis_url=redis_url,
        database_url=database_url,
        business_ids=[T],
        jwt_secret=SecretStr("gateway-test-secret-0123456789abcdef"),
    )
    async with backends(1) as started:
        data = config_for([started[0].url])
        data["routes"][0]["waiting_room"] = T
        gateway = Gateway(
            settings,
            parse_config(data),
            port=0,
            components=("gatekeeper.waitingroom.component:create_component",),
        )
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url, follow_redirects=False) as http:
                first = await http.get("/api/item?id=7")
                assert first.status_code == 302
                assert first.headers["location"] == (
                    "/queue/wait?business_id=shop&return_to=%2Fapi%2Fitem%3Fid%3D7"
                )
                page = await http.get(first.headers["location"])
                assert page.status_code == 200
                assert "/queue/client.js" in page.text
                token = (
                    await http.post("/queue/enqueue", headers={"business_id": T, "user_id": "v"})
                ).json()["jwt"]
                cookie = {"cookie": f"theme=dark; {cookie_name(T)}={token}"}
                queued = await http.get("/api/item?id=7", headers=cookie)
                assert queued.status_code == 302
                context = gateway.runtime.context
                assert context is not None
                service = context.waiting_room
                assert service is not None
                await service.store.admit(
                    T, limit=10, frequency=5, ready_ttl=300, now=service.clock.now(), grace=60
                )
                through = await http.get("/api/item?id=7", headers=cookie)
                assert through.status_code == 200
                assert (await http.get("/api/item", headers={"jwt": token})).status_code == 200
        finally:
            await gateway.stop()
