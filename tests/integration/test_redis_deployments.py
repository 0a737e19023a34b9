"""A whole replica (every component) on one Redis and on a Redis Cluster (3 masters, a replica
each), driven over HTTP: what issue 20 found broken on a cluster works on both.

On the cluster: a limited route is exact (no MOVED, no ``degraded``); waiting-room tenants whose
keys live on different nodes enqueue, poll and get admitted (no 503); a bearer-token request
and an anonymous ``/sdk/check`` answer (no 500 from a cross-slot MGET or a MOVED ban lookup);
the shared cache hits; the dashboard's live statistics add up.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.gateway.config import parse_config
from gatekeeper.redis_client import is_cluster
from gatekeeper.settings import Settings
from gatekeeper.waitingroom.redis_store import tenant_base
from tests.integration.gateway_fixtures import backends, config_for

pytestmark = pytest.mark.redis

ADMIN_TOKEN = "deployments-admin-token-0123456789"
SECRET = SecretStr("deployments-jwt-secret-0123456789abcdef")
TENANTS = [f"shop-{i}" for i in range(6)]
LIMIT = 10


@dataclass
class Replica:
    gateway: Gateway
    http: httpx.AsyncClient
    prefix: str


@pytest.fixture
async def replica(
    any_redis_url: str, redis_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Replica]:
    """A replica with every component on this Redis deployment: ``/api`` limited to LIMIT
    per minute per IP, ``/cached`` cached in Redis, ``/jwt`` behind a bearer token."""
    monkeypatch.setenv("GATEKEEPER_WAITINGROOM_EMBEDDED_WORKER", "false")
    monkeypatch.setenv("GATEKEEPER_WAITINGROOM_REDIS_PREFIX", redis_prefix)
    # Not about outages: a loaded machine's pauses must not look like a dead Redis.
    monkeypatch.setenv("GATEKEEPER_WAITINGROOM_STORE_DEADLINE_SECONDS", "2")
    settings = Settings(
        redis_url=any_redis_url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}",
        auto_migrate=True,
        admin_token=SecretStr(ADMIN_TOKEN),
        jwt_secret=SECRET,
        business_ids=TENANTS,
        live_stats_prefix=f"{redis_prefix}:live",
    )
    policy = f"per-ip-{uuid.uuid4().hex[:8]}"  # limit keys of this test's own
    async with backends(1) as started:
        data = config_for([started[0].url])
        data["policies"] = {policy: {"rate": f"{LIMIT}/minute", "algorithm": "fixed_window"}}
        data["cache"] = {"store": "redis", "redis_prefix": f"{redis_prefix}:cache"}
        data["routes"] = [
            {"name": "api", "path_prefix": "/api", "upstream": "backends", "limits": [policy]},
            {
                "name": "cached",
                "path_prefix": "/cached",
                "upstream": "backends",
                "cache": {"default_ttl": 60},
            },
            {"name": "jwt", "path_prefix": "/jwt", "upstream": "backends", "auth": "jwt"},
        ]
        # (The limiter's default 20 ms deadline: on a loaded machine a pause would fail open
        # and make the count inexact for reasons that are not this test's subject.)
        data["limiter"] = {"deadline": 1.0}
        gateway = Gateway(settings, parse_config(data), port=0)
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
                yield Replica(gateway, http, redis_prefix)
        finally:
            await gateway.stop()


async def test_a_limited_route_admits_exactly_the_limit(replica: Replica) -> None:
    """3 x LIMIT concurrent requests of one client: exactly LIMIT pass, the rest are plain
    429s (never ``degraded``)."""
    replies = await asyncio.gather(*(replica.http.get("/api/x") for _ in range(3 * LIMIT)))
    codes = [r.status_code for r in replies]
    assert codes.count(200) == LIMIT, codes
    assert codes.count(429) == 2 * LIMIT, codes
    for denied in (r for r in replies if r.status_code == 429):
        assert "degraded" not in denied.text


async def test_waiting_room_tenants_on_several_nodes(replica: Replica) -> None:
    """The scripts are loaded at start; enqueue, status and admission for tenants whose keys
    live on different nodes."""
    context = replica.gateway.runtime.context
    assert context is not None
    redis = context.redis
    if is_cluster(redis):
        nodes = {
            redis.get_node_from_key(tenant_base(replica.prefix, t) + "seq").name for t in TENANTS
        }
        assert len(nodes) >= 2, "every tenant landed on one node: the test proves nothing"
    service = context.waiting_room
    assert service is not None
    # The lean client speaks to one server: on a cluster the scripts go through redis-py.
    assert (service.store._lean is None) == is_cluster(redis)  # type: ignore[attr-defined]
    # Loaded at start (on every primary), before the first enqueue.
    scripts = service.store._scripts.values()  # type: ignore[attr-defined]
    assert all(s.sha for s in scripts)
    assert await redis.script_exists(*(s.sha for s in scripts)) == [True] * len(scripts)
    tokens = {}
    for tenant in TENANTS:
        for user in ("ann", "bob"):
            reply = await replica.http.post(
                "/queue/enqueue", headers={"business_id": tenant, "user_id": user}
            )
            assert reply.status_code == 200, reply.text
            tokens[tenant, user] = reply.json()["jwt"]
        status = await replica.http.get(
            "/queue/status", headers={"business_id": tenant, "jwt": tokens[tenant, "bob"]}
        )
        assert status.status_code == 200, status.text
        assert status.json()["position"] == 2
        assert status.json()["ready"] is False
    for tenant in TENANTS:
        await service.store.admit(
            tenant, limit=10, frequency=5, ready_ttl=300, now=service.clock.now(), grace=60
        )
        for user in ("ann", "bob"):
            status = await replica.http.get(
                "/queue/status", headers={"business_id": tenant, "jwt": tokens[tenant, user]}
            )
            assert status.status_code == 200, status.text
            assert status.json()["ready"] is True


async def test_bearer_token_and_anonymous_sdk_check_answer(replica: Replica) -> None:
    """A bearer-token request (revocation check: one MGET) and an anonymous ``/sdk/check``
    (ban lookup) answer; the connection stays usable after each."""
    registered = await replica.http.post(
        "/auth/register", json={"email": "c@example.com", "password": "correct horse battery"}
    )
    assert registered.status_code == 201, registered.text
    bearer = {"Authorization": f"Bearer {registered.json()['access_token']}"}
    for _ in range(2):
        assert (await replica.http.get("/auth/me", headers=bearer)).status_code == 200
        assert (await replica.http.get("/jwt/x", headers=bearer)).status_code == 200
        check = await replica.http.post("/sdk/check", json={})
        assert check.status_code in (200, 429), check.text
        assert check.headers["content-type"].startswith("application/")
    logout = await replica.http.post("/auth/logout", headers=bearer)
    assert logout.status_code in (200, 204), logout.text
    assert (await replica.http.get("/jwt/x", headers=bearer)).status_code == 401


async def test_the_shared_cache_hits(replica: Replica) -> None:
    """The second GET of a cached route is served from Redis."""
    path = f"/cached/{uuid.uuid4().hex}"
    first = await replica.http.get(path)
    assert first.status_code == 200
    assert "stored" in first.headers["cache-status"]
    second = await replica.http.get(path)
    assert second.headers["cache-status"].startswith("gatekeeper; hit")


async def test_the_dashboard_adds_up_live_statistics(replica: Replica) -> None:
    """Requests served show in the live statistics read back from Redis (mode ``cluster``)."""
    for _ in range(5):
        await replica.http.get(f"/cached/{uuid.uuid4().hex}")
    view: dict[str, object] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # a flush every 0.5 s, a snapshot every 1 s
        view = (await replica.http.get("/api/metrics")).json()
        if isinstance(view.get("requests"), int) and int(view["requests"]) >= 5:  # type: ignore[call-overload]
            break
        await asyncio.sleep(0.25)
    assert view["mode"] == "cluster"
    assert int(view["requests"]) >= 5, view  # type: ignore[call-overload]
    assert view["replicas"] == 1
