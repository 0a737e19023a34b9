"""Routes with ``auth``: the gateway asks the identity guard, answers 401/403/429 as JSON with
RateLimit fields, enforces the principal's tier limits and proxies what it admits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.gateway.config import parse_config
from gatekeeper.settings import Settings
from gatekeeper.testing import FakeClock
from tests.integration.gateway_fixtures import backends, config_for, running_gateway

ADMIN_TOKEN = "seams-admin-token-0123456789abcdef"
PASSWORD = "correct horse battery"


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a gateway with identity (auto-migrated SQLite, memory store) whose routes
    ``/api`` (auth: api_key), ``/jwt`` (auth: jwt) and ``/open`` (no auth) go to one backend."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}",
        auto_migrate=True,
        admin_token=SecretStr(ADMIN_TOKEN),
        jwt_secret=SecretStr("seams-jwt-secret-0123456789abcdef"),
    )
    async with backends(1) as started:
        data = config_for([started[0].url])
        data["routes"] = [
            {"name": "api", "path_prefix": "/api", "upstream": "backends", "auth": "api_key"},
            {"name": "jwt", "path_prefix": "/jwt", "upstream": "backends", "auth": "jwt"},
            {"name": "open", "path_prefix": "/open", "upstream": "backends"},
        ]
        gateway = Gateway(
            settings,
            parse_config(data),
            port=0,
            components=("gatekeeper.identity.component:create_component",),
            clock=FakeClock(),
        )
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
                yield client
        finally:
            await gateway.stop()


async def _account(http: httpx.AsyncClient, email: str) -> tuple[str, str]:
    registered = await http.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    access = str(registered.json()["access_token"])
    created = await http.post(
        "/auth/create_api_key", json={"name": "k"}, headers={"Authorization": f"Bearer {access}"}
    )
    assert created.status_code == 201, created.text
    return access, str(created.json()["api_key"])


async def test_api_key_route_enforces_the_tier_and_upgrade_raises_it(
    http: httpx.AsyncClient,
) -> None:
    """Free tier (5/min) on a proxied route: 5 x 200 with RateLimit fields, then a JSON 429
    with Retry-After; after an admin upgrade the same key passes again under premium."""
    _, key = await _account(http, "tier@example.com")
    headers = {"X-API-Key": key}
    statuses = []
    for _ in range(6):
        response = await http.get("/api/item", headers=headers)
        statuses.append(response.status_code)
        if response.status_code == 200:
            assert "ratelimit" in response.headers
            assert "tier-free" in response.headers["ratelimit-policy"]
    assert statuses == [200] * 5 + [429]
    denied = await http.get("/api/item", headers=headers)
    assert denied.status_code == 429
    assert denied.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = denied.json()
    assert body["error"] == "rate_limited"
    assert body["tier"] == "free"
    assert int(denied.headers["retry-after"]) >= 1
    upgrade = await http.post(
        "/admin/upgrade_tier",
        json={"api_key": key, "tier": "premium"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert upgrade.status_code == 200, upgrade.text
    again = await http.get("/api/item", headers=headers)
    assert again.status_code == 200
    assert "tier-premium" in again.headers["ratelimit-policy"]


async def test_missing_and_wrong_credentials_are_401(http: httpx.AsyncClient) -> None:
    """No key -> 401 JSON naming what is needed; an unknown key -> 401; open routes need none."""
    missing = await http.get("/api/item")
    assert missing.status_code == 401
    assert "X-API-Key" in missing.json()["detail"]
    wrong = await http.get("/api/item", headers={"X-API-Key": "gk_not_a_real_key_0000000000"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized"
    assert (await http.get("/open/item")).status_code == 200


async def test_jwt_route_takes_bearer_tokens_only(http: httpx.AsyncClient) -> None:
    """``auth: jwt`` proxies with a Bearer access token and refuses an API key alone."""
    access, key = await _account(http, "jwt@example.com")
    only_key = await http.get("/jwt/x", headers={"X-API-Key": key})
    assert only_key.status_code == 401
    assert only_key.headers["www-authenticate"] == "Bearer"
    ok = await http.get("/jwt/x", headers={"Authorization": f"Bearer {access}"})
    assert ok.status_code == 200


async def test_denied_address_gets_403(http: httpx.AsyncClient) -> None:
    """An admin deny rule for the client's address turns a valid key into a 403 JSON answer."""
    _, key = await _account(http, "deny@example.com")
    rule = await http.post(
        "/admin/ip_rules",
        json={"cidr": "127.0.0.1/32", "action": "deny"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert rule.status_code in (200, 201), rule.text
    denied = await http.get("/api/item", headers={"X-API-Key": key})
    assert denied.status_code == 403
    assert denied.json()["error"] == "ip_denied"


async def test_auth_route_without_identity_is_503() -> None:
    """With no identity component running, an auth route answers 503 JSON, not 500 or open."""
    async with backends(1) as started:
        data = config_for([started[0].url])
        data["routes"][0]["auth"] = "any"
        async with (
            running_gateway(data) as gateway,
            httpx.AsyncClient(base_url=gateway.url) as client,
        ):
            response = await client.get("/api/x", headers={"X-API-Key": "whatever"})
            assert response.status_code == 503
            assert response.json()["error"] == "auth_unavailable"


async def test_a_denied_address_is_refused_on_routes_without_auth_too(
    http: httpx.AsyncClient,
) -> None:
    """An admin's deny rule stops the address on every route, open ones included (the
    express lane's requests as well as streamed uploads), and lifting it lets it through."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await http.get("/open/a")).status_code == 200  # (loads the rules into memory)
    added = await http.post(
        "/admin/ip_rules", json={"cidr": "127.0.0.0/8", "action": "deny"}, headers=admin
    )
    assert added.status_code in (200, 201), added.text
    big = b"x" * 200_000
    for response in (
        await http.get("/open/a"),
        await http.get("/open/a"),  # rules in memory again: the express lane's check
        await http.post("/open/upload", content=big),
        await http.get("/api/item", headers={"X-API-Key": "gk_whatever"}),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "ip_denied"
    removed = await http.delete(f"/admin/ip_rules/{added.json()['id']}", headers=admin)
    assert removed.status_code == 200, removed.text
    assert (await http.get("/open/a")).status_code == 200
