"""Abuse detection in a running gateway (identity and abuse components, in-process store): a
scanning client is flagged and, with bans on, banned; failed logins flag the account; the
admin API lists and clears flags behind the admin token; the dashboard's feed is operational."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.gateway.config import parse_config
from gatekeeper.settings import Settings
from gatekeeper.testing import FakeClock
from tests.integration.gateway_fixtures import backends, config_for

ADMIN_TOKEN = "abuse-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PASSWORD = "correct horse battery"


class EventRecorder:
    """An in-memory EventEmitter."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], str | None]] = []

    def emit(self, type: str, data: Mapping[str, Any], *, subject: str | None = None) -> None:
        self.events.append((type, dict(data), subject))


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, EventRecorder]]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}",
        auto_migrate=True,
        admin_token=SecretStr(ADMIN_TOKEN),
        jwt_secret=SecretStr("abuse-jwt-secret-0123456789abcdef"),
    )
    async with backends(1) as started:
        # (The test is its own trusted proxy: X-Forwarded-For plays remote clients.)
        data = config_for([started[0].url], trusted_proxies=["127.0.0.1/32"])
        data["routes"] = [
            {"name": "api", "path_prefix": "/api", "upstream": "backends", "auth": "api_key"}
        ]
        data["abuse"] = {
            "scanning": {"threshold": 5, "window": 60, "ban": True},
            "credential_stuffing_account": {"threshold": 3, "window": 300},
        }
        gateway = Gateway(
            settings,
            parse_config(data),
            port=0,
            components=(
                "gatekeeper.identity.component:create_component",
                "gatekeeper.abuse.component:create_component",
            ),
            clock=FakeClock(),
        )
        await gateway.start()
        recorder = EventRecorder()
        assert gateway.runtime.context is not None
        gateway.runtime.context.events = recorder
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
                yield client, recorder
        finally:
            await gateway.stop()


async def _flagged(http: httpx.AsyncClient, pattern: str) -> list[dict[str, Any]]:
    """The flagged entries of ``pattern``, waiting (bounded) for the background evaluation."""
    for _ in range(100):
        listed = await http.get("/admin/abuse/flagged", params={"pattern": pattern}, headers=ADMIN)
        assert listed.status_code == 200, listed.text
        entries: list[dict[str, Any]] = listed.json()["flagged"]
        if entries:
            return entries
        await asyncio.sleep(0.05)
    return []


async def _api_key(http: httpx.AsyncClient) -> str:
    registered = await http.post(
        "/auth/register", json={"email": "scan@example.com", "password": PASSWORD}
    )
    assert registered.status_code == 201, registered.text
    created = await http.post(
        "/auth/create_api_key",
        json={"name": "k"},
        headers={"Authorization": f"Bearer {registered.json()['access_token']}"},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["api_key"])


async def test_a_scanner_is_flagged_then_banned(
    served: tuple[httpx.AsyncClient, EventRecorder],
) -> None:
    http, recorder = served
    key = await _api_key(http)
    assert (await http.get("/api/item", headers={"X-API-Key": key})).status_code == 200
    for i in range(4):
        assert (await http.get(f"/wp-admin/{i}.php")).status_code == 404
    await asyncio.sleep(0.2)  # (the evaluation has run: below the threshold, nothing)
    assert (await http.get("/admin/abuse/flagged", headers=ADMIN)).json()["flagged"] == []
    assert (await http.get("/api/item", headers={"X-API-Key": key})).status_code == 200
    assert (await http.get("/wp-admin/4.php")).status_code == 404
    [entry] = await _flagged(http, "scanning")
    assert entry["subject"] == "ip:127.0.0.1"
    assert entry["count"] == 5
    assert entry["banned_for"] == 300
    banned = await http.get("/api/item", headers={"X-API-Key": key})
    assert banned.status_code == 429
    assert banned.json()["error"] == "banned"
    assert int(banned.headers["retry-after"]) >= 1
    detected = [e for e in recorder.events if e[0] == "abuse.detected"]
    assert [(e[1]["pattern"], e[2], e[1]["threshold"]) for e in detected] == [
        ("scanning", "ip:127.0.0.1", 5)
    ]
    # The dashboard's feed (loopback is an operator network) shows it too.
    feed = await http.get("/dashboard/abuse")
    assert feed.status_code == 200
    assert [e["subject"] for e in feed.json()["flagged"]] == ["ip:127.0.0.1"]
    # An admin clears the flag; the ban stays until lifted.
    cleared = await http.delete(
        "/admin/abuse/flagged",
        params={"pattern": "scanning", "subject": "ip:127.0.0.1"},
        headers=ADMIN,
    )
    assert cleared.status_code == 200, cleared.text
    audit = await http.get("/admin/audit", params={"action": "abuse.clear"}, headers=ADMIN)
    [record] = audit.json()["entries"]
    assert record["target"] == "ip:127.0.0.1"
    assert record["detail"] == {"pattern": "scanning"}
    assert (await http.get("/admin/abuse/flagged", headers=ADMIN)).json()["flagged"] == []
    assert (await http.get("/api/item", headers={"X-API-Key": key})).status_code == 429


async def test_failed_logins_flag_the_account(
    served: tuple[httpx.AsyncClient, EventRecorder],
) -> None:
    http, recorder = served
    for _ in range(3):
        bad = await http.post(
            "/auth/login", json={"email": "Victim@example.com", "password": "wrong password!"}
        )
        assert bad.status_code == 401
    [entry] = await _flagged(http, "credential_stuffing_account")
    assert entry["subject"] == "account:victim@example.com"
    assert entry["banned_for"] == 0  # (accounts are flagged, never banned)
    [event] = [e for e in recorder.events if e[0] == "abuse.detected"]
    assert event[1]["type"] == "account"
    assert event[1]["count"] == 3


async def test_the_admin_api_needs_the_token_and_names_bad_input(
    served: tuple[httpx.AsyncClient, EventRecorder],
) -> None:
    http, _ = served
    assert (await http.get("/admin/abuse/flagged")).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert (await http.get("/admin/abuse/flagged", headers=wrong)).status_code in (401, 403)
    anonymous = await http.delete(
        "/admin/abuse/flagged", params={"pattern": "scanning", "subject": "ip:192.0.2.1"}
    )
    assert anonymous.status_code == 401
    listed = await http.get("/admin/abuse/flagged", headers=ADMIN)
    assert listed.status_code == 200
    body = listed.json()
    assert body["enabled"] is True
    assert body["patterns"]["scanning"] == {"threshold": 5, "window": 60.0, "ban": True}
    for params, status, named in [
        ({"subject": "ip:192.0.2.1"}, 422, "pattern"),
        ({"pattern": "nonsense", "subject": "ip:192.0.2.1"}, 422, "pattern"),
        ({"pattern": "scanning"}, 422, "subject"),
        ({"pattern": "scanning", "subject": "ip:192.0.2.1"}, 404, "not flagged"),
    ]:
        answer = await http.delete("/admin/abuse/flagged", params=params, headers=ADMIN)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert named in answer.text
    bad_filter = await http.get("/admin/abuse/flagged", params={"pattern": "x"}, headers=ADMIN)
    assert bad_filter.status_code == 422
    # The dashboard's feed is operational: remote clients need the token.
    remote = {"x-forwarded-for": "203.0.113.9"}
    assert (await http.get("/dashboard/abuse", headers=remote)).status_code == 401
    with_token = await http.get("/dashboard/abuse", headers={**remote, **ADMIN})
    assert with_token.status_code == 200
    assert with_token.json() == {"enabled": True, "flagged": []}
