"""The waiting room's HTTP API end to end on real Redis and PostgreSQL (clock injected)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as aioredis

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits import Limiter, storage_from_url
from gatekeeper.persistence.db import Database
from gatekeeper.persistence.testing import scratch_database
from gatekeeper.redis_client import redis_from_url
from gatekeeper.testing import FakeClock
from gatekeeper.waitingroom.config_repository import SqlConfigRepository
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.tenants import new_secret
from gatekeeper.waitingroom.testing import (
    TEST_SECRET,
    TEST_TENANT_KEY,
    WaitingRoom,
    build,
    patient_guard,
)
from gatekeeper.waitingroom.tokens import EdDSASigner, HS256Signer, TokenCodec
from tests import services

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

T = "shop"
KEY = TEST_TENANT_KEY  # shop's secret key: what its backend sends as business_id
OTHER_KEY = new_secret()
KEYS = {T: KEY, "other": OTHER_KEY}


@dataclass
class Env:
    rooms: list[WaitingRoom]
    clients: list[httpx.AsyncClient]
    clock: FakeClock
    database: Database
    redis: aioredis.Redis


@pytest.fixture
async def env(redis_prefix: str, fake_clock: FakeClock, any_redis_url: str) -> AsyncIterator[Env]:
    """Two replicas (services + workers) sharing one PostgreSQL schema and one Redis, or one
    Redis Cluster."""
    client = redis_from_url(any_redis_url)
    try:
        storage = storage_from_url(any_redis_url, prefix=redis_prefix)
    except ConfigurationError:  # the engine's Redis store is still being built: same contract
        storage = storage_from_url("memory://")
    limiter = Limiter(storage, deadline=2.0)  # a loaded CI machine must not fail open
    async with scratch_database(services.postgres_url()) as database:
        repository = SqlConfigRepository(database)
        await repository.ensure({T: [KEY], "other": [OTHER_KEY]})
        await repository.save(
            T,
            (await repository.get(T)).updated(  # type: ignore[union-attr]
                {"admission_limit": 3, "ip_enqueue_limit": 1000, "ip_status_polling_limit": 1000}
            ),
        )
        rooms = [
            build(
                RedisStore(client, prefix=redis_prefix, guard=patient_guard()),
                repository,
                fake_clock,
                limiter=limiter,
                owner=f"replica-{i}",
            )
            for i in range(2)
        ]
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=room.app), base_url="http://wr")
            for room in rooms
        ]
        try:
            yield Env(rooms, clients, fake_clock, database, client)
        finally:
            for c in clients:
                await c.aclose()
            await limiter.aclose()
            await client.aclose()


async def enqueue(http: httpx.AsyncClient, user: str, tenant: str = T) -> httpx.Response:
    return await http.post("/queue/enqueue", headers={"business_id": tenant, "user_id": user})


async def status(http: httpx.AsyncClient, token: str, tenant: str = T) -> httpx.Response:
    return await http.get("/queue/status", headers={"business_id": tenant, "jwt": token})


async def verify(http: httpx.AsyncClient, token: str, tenant: str = T) -> httpx.Response:
    """The backend's call: with the tenant's secret key."""
    return await http.get("/queue/verify", headers={"business_id": KEYS[tenant], "jwt": token})


async def finish(http: httpx.AsyncClient, token: str, tenant: str = T) -> httpx.Response:
    """The backend's call: with the tenant's secret key."""
    return await http.delete("/queue/finish", headers={"business_id": KEYS[tenant], "jwt": token})


async def tick(env: Env) -> None:
    """Advance one admission period and let both workers try (only one may admit)."""
    env.clock.advance(5)
    for room in env.rooms:
        await room.worker.run_once()


async def test_full_flow_for_many_users(env: Env) -> None:
    """30 users through two replicas: FIFO admission, verify, finish, replay refused."""
    tokens: list[str] = []
    for i in range(30):
        response = await enqueue(env.clients[i % 2], f"user-{i}")
        assert response.status_code == 200
        body = response.json()
        assert body["position"] == i + 1
        assert body["message"] == "User enqueued successfully."
        assert body["eta_range_seconds"][0] <= body["eta_seconds"] <= body["eta_range_seconds"][1]
        tokens.append(body["jwt"])
    admitted_order: list[int] = []
    for _ in range(10):
        await tick(env)
        for i, token in enumerate(tokens):
            if i in admitted_order:
                continue
            body = (await status(env.clients[(i + 1) % 2], token)).json()
            assert set(body) >= {"warning_msg", "jwt_token", "position", "ready"}
            if body["ready"]:
                assert body["position"] is None
                admitted_order.append(i)
            else:
                assert body["position"] == i + 1 - len(admitted_order)
    assert admitted_order == list(range(30))
    for i, token in enumerate(tokens):
        assert (await verify(env.clients[i % 2], token)).json() == {
            "message": "User is ready",
            "ready": True,
        }
        cleared = (await finish(env.clients[(i + 1) % 2], token)).json()
        assert cleared["status"] == "ready_cleared"
        replay = (await verify(env.clients[i % 2], token)).json()
        assert replay["ready"] is False
        assert (await finish(env.clients[i % 2], token)).json()["status"] == "not_ready"


async def test_duplicate_enqueue_returns_empty_jwt_and_current_position(env: Env) -> None:
    """Enqueueing twice (even on another replica) keeps one place and returns an empty jwt."""
    await enqueue(env.clients[0], "a")
    first = (await enqueue(env.clients[0], "b")).json()
    again = (await enqueue(env.clients[1], "b")).json()
    assert first["jwt"]
    assert again["jwt"] == ""
    assert again["position"] == 2
    await tick(env)
    ready = (await enqueue(env.clients[1], "b")).json()
    assert ready["jwt"] == ""
    assert ready["position"] is None


def _forge(token: str, **changes: object) -> str:
    header, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    new_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{new_body}.{sig}"


async def test_tampered_tokens_are_refused(env: Env) -> None:
    """Wrong signature, alg none, another tenant's token, changed claims and expiry fail."""
    token = (await enqueue(env.clients[0], "victim")).json()["jwt"]
    await tick(env)
    assert (await verify(env.clients[0], token)).json()["ready"] is True
    now = env.clock.now()
    other_key = TokenCodec(HS256Signer("another-secret-another-secret-12345"))
    wrong_sig = other_key.issue(T, "victim", 1, now=now, ttl=120)
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    alg_none = f"{none_header}.{token.split('.')[1]}."
    eddsa = TokenCodec(EdDSASigner.generate()).issue(T, "victim", 1, now=now, ttl=120)
    other_tenant = TokenCodec(HS256Signer(TEST_SECRET)).issue("other", "victim", 1, now=now, ttl=60)
    for bad in (wrong_sig, alg_none, eddsa, _forge(token, sub="mallory"), "", "x.y.z"):
        response = await verify(env.clients[0], bad)
        assert response.status_code == 401, bad
        assert response.json()["ready"] is False
    # A token of tenant "other" presented to "shop", and "shop"'s token presented to "other".
    assert (await verify(env.clients[0], other_tenant)).status_code == 401
    assert (await verify(env.clients[0], token, tenant="other")).status_code == 401
    # Expired: verify refuses; status (authentic) renews it.
    env.clock.advance(121)
    assert (await verify(env.clients[0], token)).status_code == 401
    renewed = (await status(env.clients[0], token)).json()
    assert renewed["ready"] is True
    assert renewed["jwt_token"] != token
    assert (await verify(env.clients[0], renewed["jwt_token"])).json()["ready"] is True


async def test_unknown_tenant_and_missing_headers(env: Env) -> None:
    """Unknown or missing business_id -> 401 JSON; missing user_id -> 400 JSON."""
    assert (await enqueue(env.clients[0], "u", tenant="nope")).status_code == 401
    response = await env.clients[0].post("/queue/enqueue", headers={"user_id": "u"})
    assert response.status_code == 401
    assert "business_id" in response.json()["detail"]
    missing_user = await env.clients[0].post("/queue/enqueue", headers={"business_id": T})
    assert missing_user.status_code == 400
    assert (await env.clients[0].get("/config")).status_code == 401


async def test_config_bounds_partial_updates_and_persistence(env: Env) -> None:
    """POST /config applies partial updates, rejects out-of-bounds with 422 naming the field,
    persists in SQL and is seen by the other replica."""
    headers = {"business_id": KEY}
    bad = await env.clients[0].post("/config", headers=headers, json={"jwt_expiry_seconds": 601})
    assert bad.status_code == 422
    assert "jwt_expiry_seconds" in bad.json()["detail"]
    for field, value in (("ready_ttl_seconds", 59), ("admission_limit", 0), ("nonsense", 1)):
        response = await env.clients[0].post("/config", headers=headers, json={field: value})
        assert response.status_code == 422
        assert field in response.json()["detail"]
    # Valid JSON that is not an object: 422 naming the body; not JSON at all: 400.
    listed = await env.clients[0].post("/config", headers=headers, content=b"[1]")
    assert listed.status_code == 422
    assert listed.json()["problems"] == [{"field": "body", "problem": "a JSON object is required"}]
    garbage = await env.clients[0].post("/config", headers=headers, content=b"{nope")
    assert garbage.status_code == 400
    ok = await env.clients[0].post(
        "/config", headers=headers, json={"admission_limit": 20, "jwt_expiry_seconds": 600}
    )
    assert ok.status_code == 200
    assert ok.json()["updated_config"]["admission_limit"] == 20
    seen = (await env.clients[1].get("/config", headers=headers)).json()
    assert seen["message"] == "Configuration retrieved successfully"
    assert seen["updated_config"]["jwt_expiry_seconds"] == 600
    assert seen["updated_config"]["ready_ttl_seconds"] == 300
    repository = SqlConfigRepository(env.database)
    stored = await repository.get(T)
    assert stored is not None
    assert stored.admission_limit == 20


async def test_config_settings_are_integers_not_booleans_strings_or_floats(env: Env) -> None:
    """{"admission_limit": true} (or "5", 5.0, null) is 422 naming the field; nothing changes
    (true was once taken as 1)."""
    headers = {"business_id": KEY}
    before = (await env.clients[0].get("/config", headers=headers)).json()["updated_config"]
    for field in ("admission_limit", "ip_enqueue_limit", "jwt_expiry_seconds"):
        for value in (True, False, "100", 100.0, None):
            bad = await env.clients[0].post("/config", headers=headers, json={field: value})
            assert bad.status_code == 422, (field, value)
            assert field in bad.json()["detail"]
            assert [p["field"] for p in bad.json()["problems"]] == [field]
    stored = (await env.clients[1].get("/config", headers=headers)).json()["updated_config"]
    assert (stored["admission_limit"], stored["ip_enqueue_limit"]) == (3, 1000)
    assert stored["jwt_expiry_seconds"] == 120
    in_database = await SqlConfigRepository(env.database).get(T)
    assert in_database is not None
    assert in_database.model_dump() == before


async def test_per_ip_limits_answer_429_with_retry_after(env: Env) -> None:
    """Past the tenant's per-IP enqueue and status limits the API answers 429 + Retry-After."""
    await env.clients[0].post(
        "/config",
        headers={"business_id": KEY},
        json={"ip_enqueue_limit": 3, "ip_status_polling_limit": 2},
    )
    codes = [(await enqueue(env.clients[i % 2], f"ip-{i}")).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    limited = await enqueue(env.clients[0], "ip-9")
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["retry_after"] >= 1
    token = (await enqueue(env.clients[0], "ip-0")).json()
    assert token.get("retry_after") is not None  # still limited: the same IP
    # Status polls have their own budget.
    first = (await env.rooms[0].service.enqueue(T, "direct")).jwt
    polls = [(await status(env.clients[1], first)).status_code for _ in range(3)]
    assert polls == [200, 200, 429]


async def test_two_workers_admit_each_user_exactly_once(env: Env) -> None:
    """Two workers racing every period: ticks are not doubled, nobody is skipped or repeated."""
    for i in range(20):
        await env.rooms[i % 2].service.enqueue(T, f"w-{i}", None)
    base = env.rooms[0].service.store
    heads = []
    for _ in range(7):
        env.clock.advance(5)
        # The lease holder admits; a second pass in the same period must not admit again.
        results = [await room.worker.run_once() for room in env.rooms]
        results += [await room.worker.run_once() for room in env.rooms]
        ticks = sum(r[T].ticks for r in results if r is not None)
        assert ticks == 1
        heads.append((await base.stats(T, env.clock.now())).head)
    assert heads == [3, 6, 9, 12, 15, 18, 20]
    for i in range(20):
        assert await base.verify(T, i + 1, f"w-{i}", env.clock.now())


async def test_abandoned_users_do_not_stall_admission(env: Env) -> None:
    """Users who stop polling leave the count; admission skips them and keeps its pace."""
    tokens = [(await enqueue(env.clients[0], f"ab-{i}")).json()["jwt"] for i in range(12)]
    active = {0, 5, 10, 11}
    for _ in range(5):  # 150 s: two grace periods; only the active ones poll
        env.clock.advance(30)
        for i in active:
            await status(env.clients[1], tokens[i])
    result = await env.rooms[0].worker.run_once()
    assert result is not None
    # One tick of 3 reached ticket 11: the 8 silent users ahead were skipped, not admitted.
    assert (result[T].admitted, result[T].skipped, result[T].head) == (3, 8, 11)
    for i in (0, 5, 10):  # their tokens expired meanwhile: status renews them
        assert (await status(env.clients[0], tokens[i])).json()["ready"] is True
    assert (await status(env.clients[0], tokens[11])).json()["position"] == 1
    await tick(env)
    assert (await status(env.clients[0], tokens[11])).json()["ready"] is True
    gone = (await status(env.clients[0], tokens[1])).json()
    assert gone["ready"] is False
    assert gone["position"] is None
    assert "enqueue again" in gone["warning_msg"]
