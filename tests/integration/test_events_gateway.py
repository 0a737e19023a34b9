"""The events component in a running gateway (Redis outbox, SQL subscriptions): a webhook
created through the admin API receives a rate-limit spike the gateway's accounting counted."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.gateway.config import parse_config
from gatekeeper.settings import Settings
from tests.integration.events_support import WebhookReceiver, until
from tests.integration.gateway_fixtures import backends, config_for

TOKEN = "events-gateway-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_spike_of_429s_reaches_a_webhook_created_through_the_admin_api(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """Limit 1/min per IP, spike threshold 3: the 4th request is the 3rd 429 and makes one
    ratelimit.spike for the route and one for the key, signed, at the subscriber."""
    monkeypatch.setenv("GATEKEEPER_EVENTS_REDIS_PREFIX", redis_prefix)
    monkeypatch.setenv("GATEKEEPER_RATELIMIT_SPIKE_THRESHOLD", "3")
    monkeypatch.setenv("GATEKEEPER_EVENTS_FLUSH_INTERVAL_SECONDS", "0.02")
    receiver = await WebhookReceiver().start()
    settings = Settings(
        redis_url=redis_url,
        admin_token=SecretStr(TOKEN),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}",
    )
    async with backends(1) as bs:
        data = config_for(
            [bs[0].url],
            policies={"per-ip": {"rate": "1/60s", "algorithm": "fixed_window"}},
            routes=[
                {"name": "api", "path_prefix": "/api", "upstream": "backends", "limits": ["per-ip"]}
            ],
        )
        gateway = Gateway(
            settings,
            parse_config(data),
            port=0,
            components=["gatekeeper.events.component:create_component"],
        )
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                created = await client.post(
                    "/admin/webhooks",
                    json={"url": receiver.url, "event_types": ["ratelimit.spike"]},
                    headers=ADMIN,
                )
                assert created.status_code == 201, created.text
                receiver.secret = created.json()["secret"]
                statuses = [(await client.get("/api/x")).status_code for _ in range(4)]
                assert statuses == [200, 429, 429, 429]
                assert await until(lambda: len(receiver.received) >= 2, 15)
        finally:
            await gateway.stop()
            await receiver.stop()
    bodies = [json.loads(r.body) for r in receiver.received]
    assert all(r.valid for r in receiver.received)
    assert {b["type"] for b in bodies} == {"gatekeeper.ratelimit.spike"}
    assert sorted((b["data"]["scope"], b["data"]["count"]) for b in bodies) == [
        ("key", 3),
        ("route", 3),
    ]
    assert any(b["subject"] == "route:api" for b in bodies)
