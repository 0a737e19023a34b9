"""The decision service (seed 002): /sdk.js, /sdk, /sdk/check, /sdk/track, /usage and /data,
on SQLite and PostgreSQL; the Python client and the browser SDK against a real HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from gatekeeper.errors import AuthenticationError
from gatekeeper.gateway.flow.flow import Flow
from gatekeeper.gateway.http.server import Server
from gatekeeper.identity.bans import BanRules
from gatekeeper.identity.service import Identity
from gatekeeper.persistence import Database
from gatekeeper.sdk import DecisionClient
from gatekeeper.testing import FakeClock
from tests.integration._identity_harness import (
    ADMIN,
    Api,
    bearer,
    build_app,
    build_identity,
    build_table,
)
from tests.servers import free_port, tool

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
async def sdk(sql_database: Database, fake_clock: FakeClock) -> AsyncIterator[Api]:
    """The routes with a small anonymous limit (3/min) and bans after 3 denials."""
    identity = build_identity(
        sql_database,
        fake_clock,
        anonymous_rate="3/minute",
        bans=BanRules(threshold=3, window=60, base=300, multiplier=2),
    )
    transport = httpx.ASGITransport(app=build_app(identity), client=("203.0.113.50", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gk.test") as client:
        yield Api(client, identity, fake_clock)


async def _key(api: Api, email: str = "sdk@example.com") -> dict[str, Any]:
    tokens = await api.register(email)
    return await api.new_key(tokens["access_token"], name="sdk")


async def test_static_sdk_and_demo_page(sdk: Api) -> None:
    """The SDK script and demo page are served with the right types and a strict CSP."""
    script = await sdk.client.get("/sdk.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("application/javascript")
    assert "Gatekeeper.prototype.check" in script.text
    page = await sdk.client.get("/sdk")
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/sdk.js">' in page.text
    assert (await sdk.client.get("/sdk/demo.js")).status_code == 200


async def test_anonymous_checks_are_limited_per_ip_then_banned(sdk: Api) -> None:
    """Three anonymous checks pass, the fourth is 429 with RateLimit fields; repeated
    denials ban the IP for 300 s; after the ban and the window, checks pass again."""
    for remaining in (2, 1, 0):
        ok = await sdk.client.post("/sdk/check", json={"endpoint": "/x"})
        assert ok.status_code == 200
        assert ok.json()["remaining"] == remaining
        assert ok.headers["ratelimit-policy"] == '"anon-ip";q=3;w=60'
    denied = await sdk.client.post("/sdk/check", json={})
    assert denied.status_code == 429
    assert denied.json()["reason"] == "rate_limited"
    assert 1 <= int(denied.headers["retry-after"]) <= 60
    await sdk.client.post("/sdk/check", json={})
    banned = await sdk.client.post("/sdk/check", json={})
    assert banned.status_code == 429
    assert banned.json()["reason"] == "banned"
    assert banned.headers["retry-after"] == "300"
    sdk.clock.advance(299)
    assert (await sdk.client.post("/sdk/check", json={})).json()["reason"] == "banned"
    sdk.clock.advance(2)
    assert (await sdk.client.post("/sdk/check", json={})).status_code == 200


async def test_key_checks_follow_the_tier_and_count_usage(sdk: Api) -> None:
    """A free key gets 5 per minute; /usage shows tier, remaining and counts; an upgrade
    to basic raises the limit to 20 at once."""
    key = await _key(sdk)
    headers = {"X-API-Key": key["api_key"]}
    statuses = [
        (await sdk.client.post("/sdk/check", headers=headers)).status_code for _ in range(6)
    ]
    assert statuses == [200] * 5 + [429]
    usage = await sdk.client.get("/usage", params={"api_key": key["api_key"]})
    assert usage.status_code == 200
    body = usage.json()
    assert body["tier"] == "free"
    assert body["limits"][0]["limit"] == 5
    assert body["limits"][0]["remaining"] == 0
    assert (body["requests_today"], body["denied_today"]) == (5, 1)
    history = await sdk.client.get("/usage/history?granularity=hour&count=2", headers=headers)
    assert [b["requests"] for b in history.json()["buckets"]] == [0, 5]

    await sdk.client.post(
        "/admin/upgrade_tier", json={"api_key": key["api_key"], "tier": "basic"}, headers=ADMIN
    )
    upgraded = await sdk.client.post("/sdk/check", headers=headers)
    assert upgraded.status_code == 200
    assert (upgraded.json()["tier"], upgraded.json()["limit"]) == ("basic", 20)


async def test_check_refuses_bad_keys_and_bad_input(sdk: Api) -> None:
    """Unknown keys 401, blocked keys 403, nonsense costs and fields 422."""
    key = await _key(sdk)
    unknown = await sdk.client.post("/sdk/check", json={"api_key": "gk_00000000_" + "A" * 43})
    assert unknown.status_code == 401
    await sdk.client.post("/admin/block_key", json={"key_id": key["key_id"]}, headers=ADMIN)
    blocked = await sdk.client.post("/sdk/check", json={"api_key": key["api_key"]})
    assert blocked.status_code == 403
    for body in ({"cost": 0}, {"cost": "many"}, {"surprise": 1}, {"endpoint": "x" * 3000}):
        bad = await sdk.client.post("/sdk/check", json=body)
        assert bad.status_code == 422, body
        assert bad.json()["error"] == "invalid_input"


async def test_track_records_calls_without_debiting(sdk: Api) -> None:
    """/sdk/track needs a valid key, lands in /logs verbatim and uses no quota."""
    key = await _key(sdk)
    headers = {"X-API-Key": key["api_key"]}
    hostile = "/orders?q=<script>alert(1)</script>'--"
    tracked = await sdk.client.post(
        "/sdk/track", json={"endpoint": hostile, "status": 201, "method": "POST"}, headers=headers
    )
    assert tracked.json() == {"tracked": True}
    logs = await sdk.client.get("/logs", headers=ADMIN)
    entry = logs.json()["entries"][0]
    assert (entry["endpoint"], entry["status"], entry["kind"]) == (hostile, 201, "track")
    usage = await sdk.client.get("/usage", headers=headers)
    assert usage.json()["limits"][0]["remaining"] == 5
    anonymous = await sdk.client.post("/sdk/track", json={"endpoint": "/x"})
    assert anonymous.status_code == 401


async def test_data_needs_a_credential_and_usage_needs_a_key(sdk: Api) -> None:
    """/data without credentials is 401; /usage with a user token (no key) is 401."""
    assert (await sdk.client.get("/data")).status_code == 401
    tokens = await sdk.register("data@example.com")
    assert (
        await sdk.client.get("/usage", headers=bearer(tokens["access_token"]))
    ).status_code == 401
    ok = await sdk.client.get("/data", headers=bearer(tokens["access_token"]))
    assert ok.status_code == 200
    assert ok.json()["policy"] == "tier-free"
    # A token issued on free follows the user's upgrade at once (no new token needed).
    await sdk.client.post(
        "/admin/upgrade_tier", json={"user_id": tokens["user_id"], "tier": "premium"}, headers=ADMIN
    )
    upgraded = await sdk.client.get("/data", headers=bearer(tokens["access_token"]))
    assert (upgraded.json()["tier"], upgraded.json()["limit"]) == ("premium", 100)


@pytest.fixture
async def server(
    sql_database: Database, fake_clock: FakeClock
) -> AsyncIterator[tuple[str, Identity]]:
    """The routes behind Gatekeeper's own HTTP server on a free port."""
    identity = build_identity(sql_database, fake_clock)
    srv = Server(
        Flow.for_endpoints(build_table(identity)),
        host="127.0.0.1",
        port=free_port(),
        shutdown_grace=1.0,
    )
    await srv.start()
    try:
        yield f"http://127.0.0.1:{srv.port}", identity
    finally:
        await srv.stop()


async def test_python_client_over_real_http(server: tuple[str, Identity]) -> None:
    """DecisionClient checks and tracks over HTTP; a bad key raises AuthenticationError."""
    url, identity = server
    user = await identity.users.register("client@example.com", "correct horse battery")
    key = await identity.api_keys.create(user.id, "backend")
    client = DecisionClient(url, api_key=key.secret)
    results = [await client.acheck(endpoint="/orders") for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert results[0].tier == "free"
    assert (results[0].limit, results[0].remaining) == (5, 4)
    assert results[-1].status == 429
    assert results[-1].retry_after >= 1
    assert await client.atrack(endpoint="/orders", status=200)
    with pytest.raises(AuthenticationError):
        await DecisionClient(url, api_key="gk_00000000_" + "B" * 43).acheck()


@pytest.mark.browser
@pytest.mark.parametrize("sql_database", ["sqlite+aiosqlite://"], indirect=True)
async def test_browser_sdk_checks_and_shows_the_quota(server: tuple[str, Identity]) -> None:
    """In Chromium, the /sdk page checks with a pasted key and shows what remains."""
    url, identity = server
    user = await identity.users.register("browser@example.com", "correct horse battery")
    key = await identity.api_keys.create(user.id, "web")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=tool("chromium"), args=ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{url}/sdk")
            await page.fill("#key", key.secret)
            await page.click("#check")
            # expect() polls without eval, which the page's CSP (rightly) forbids.
            quota = page.locator("#quota")
            await expect(quota).to_have_text("remaining 4 / 5")
            for _ in range(5):
                await page.click("#check")
            await expect(quota).to_have_attribute("data-allowed", "false")
            await expect(quota).to_contain_text("retry in")
            result = await page.evaluate(
                """async (secret) => {
                    const gk = new Gatekeeper({ apiKey: secret });
                    try { await gk.fetch('/sdk.js'); return 'called'; }
                    catch (e) { return e.name + ':' + e.retryAfter; }
                }""",
                key.secret,
            )
            assert result.startswith("GatekeeperLimitError:")
        finally:
            await browser.close()


async def test_the_seed_sdks_own_fields_are_accepted_and_unknown_ones_named(sdk: Api) -> None:
    """The seeds' browser SDK sends endpoint and method to /sdk/check, status_code and
    response_time_ms to /sdk/track: accepted and recorded; a field nobody knows is a 422
    naming it."""
    key = (await _key(sdk))["api_key"]
    headers = {"x-api-key": key}
    checked = await sdk.client.post(
        "/sdk/check", json={"endpoint": "/orders", "method": "post"}, headers=headers
    )
    assert checked.status_code == 200, checked.text
    tracked = await sdk.client.post(
        "/sdk/track",
        json={"endpoint": "/orders", "method": "POST", "status_code": 201,
              "response_time_ms": 12.5},
        headers=headers,
    )  # fmt: skip
    assert tracked.status_code == 200, tracked.text
    log = await sdk.identity.request_log.recent(2)
    assert log[0]["status"] == 201
    assert log[0]["latency_ms"] == 12.5
    assert log[1]["method"] == "POST"
    unknown = await sdk.client.post("/sdk/track", json={"colour": "blue"}, headers=headers)
    assert unknown.status_code == 422
    assert "colour" in str(unknown.json()["problems"])
