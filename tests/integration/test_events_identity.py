"""The identity reports to the events: tier changes, key blocks and unblocks, bans and
unbans, through the real admin routes and the real guard (SQLite and PostgreSQL)."""

# ruff: noqa: F811  (pytest fixtures imported from the harness are re-bound as parameters)

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gatekeeper.events.emitter import BufferedEmitter
from gatekeeper.events.outbox import MemoryOutbox
from gatekeeper.identity.bans import BanRules
from gatekeeper.persistence import Database
from gatekeeper.testing import FakeClock
from tests.integration._identity_harness import (  # noqa: F401
    ADMIN,
    Api,
    api,
    build_app,
    build_identity,
    identity,
)


async def _events(emitter: BufferedEmitter) -> list[tuple[str, dict[str, Any], str | None]]:
    await emitter.flush()
    outbox = emitter.outbox
    got = await outbox.read("t", 1000, 0)
    await outbox.ack([i for i, _ in got])
    return [(e.type, e.data, e.subject) for _, e in got]


async def test_admin_levers_report_tier_changes_blocks_and_unbans(api: Api) -> None:
    """upgrade_tier -> tier.changed (old, new, actor); block/unblock -> key.blocked/unblocked;
    unban of an IP and of a key -> ip.unbanned / key.unbanned."""
    api.identity.events = emitter = BufferedEmitter(MemoryOutbox())
    tokens = await api.register("ev@example.com")
    key = await api.new_key(tokens["access_token"], name="main")
    upgraded = await api.client.post(
        "/admin/upgrade_tier", json={"user_id": tokens["user_id"], "tier": "premium"}, headers=ADMIN
    )
    assert upgraded.status_code == 200, upgraded.text
    for path in ("/admin/block_key", "/admin/unblock_key"):
        answer = await api.client.post(path, json={"key_id": key["key_id"]}, headers=ADMIN)
        assert answer.status_code == 200, answer.text
    for subject in ("ip:203.0.113.9", f"key:{key['key_id']}"):
        answer = await api.client.post("/admin/unban", json={"subject": subject}, headers=ADMIN)
        assert answer.status_code == 200
    got = await _events(emitter)
    assert [t for t, _, _ in got] == [
        "tier.changed",
        "key.blocked",
        "key.unblocked",
        "ip.unbanned",
        "key.unbanned",
    ]
    tier = got[0][1]
    assert (tier["old"], tier["new"], tier["actor"]) == ("free", "premium", "admin-token")
    assert got[1][2] == f"key:{key['key_id']}"
    assert got[3][1]["ip"] == "203.0.113.9"


@pytest.fixture
async def banning(sql_database: Database, fake_clock: FakeClock) -> AsyncIterator[Api]:
    identity = build_identity(
        sql_database, fake_clock, anonymous_rate="2/minute", bans=BanRules(threshold=2)
    )
    transport = httpx.ASGITransport(app=build_app(identity), client=("203.0.113.50", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gk.test") as client:
        yield Api(client, identity, fake_clock)


async def test_a_ban_by_the_guard_is_reported_with_its_duration(banning: Api) -> None:
    """Repeated denials ban the address: one ip.banned with the seconds of the ban."""
    banning.identity.events = emitter = BufferedEmitter(MemoryOutbox())
    statuses = [(await banning.client.post("/sdk/check", json={})).status_code for _ in range(5)]
    assert statuses[:2] == [200, 200]
    assert statuses[-1] == 429
    got = await _events(emitter)
    assert got == [("ip.banned", {"ip": "203.0.113.50", "seconds": 300.0}, "ip:203.0.113.50")]
