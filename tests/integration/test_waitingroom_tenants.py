"""Tenant configuration belongs to the tenant: a public id for browsers, secret keys for its
backend, stored hashed and rotated with an overlap (real Redis, SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from gatekeeper.endpoints import openapi_document
from gatekeeper.errors import ConfigurationError
from gatekeeper.persistence.db import Database
from gatekeeper.persistence.models import TenantKey
from gatekeeper.redis_client import redis_from_url
from gatekeeper.testing import FakeClock
from gatekeeper.waitingroom.config import WaitingRoomSettings
from gatekeeper.waitingroom.config_repository import MemoryConfigRepository
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.sql_repository import SqlConfigRepository
from gatekeeper.waitingroom.tenants import new_secret
from gatekeeper.waitingroom.testing import TEST_TENANT_KEY, WaitingRoom, build, patient_guard

pytestmark = pytest.mark.redis

T = "shop"
KEY = TEST_TENANT_KEY
ADMIN = "tenant-test-admin-token-0123456789"
BEARER = {"Authorization": f"Bearer {ADMIN}"}
CACHE = 2.0  # GATEKEEPER_WAITINGROOM_CONFIG_CACHE_SECONDS's default


class CountingRepository(SqlConfigRepository):
    """The SQL repository, counting the reads that reach the database."""

    reads = 0

    async def get(self, tenant: str) -> Any:
        self.reads += 1
        return await super().get(tenant)

    async def find_key(self, prefix: str) -> Any:
        self.reads += 1
        return await super().find_key(prefix)


@dataclass
class Env:
    rooms: list[WaitingRoom]
    http: list[httpx.AsyncClient]
    repository: CountingRepository
    database: Database
    clock: FakeClock


@pytest.fixture
async def env(
    sql_database: Database, redis_prefix: str, fake_clock: FakeClock, any_redis_url: str
) -> AsyncIterator[Env]:
    """Two replicas sharing Redis (one server, or a cluster) and the database, configs cached
    as in production."""
    client = redis_from_url(any_redis_url)
    repository = CountingRepository(sql_database, clock=fake_clock)
    await repository.ensure({T: [KEY]})
    settings = WaitingRoomSettings(config_cache_seconds=CACHE)
    rooms = [
        build(
            RedisStore(client, prefix=redis_prefix, guard=patient_guard()),
            repository,
            fake_clock,
            settings=settings,
            admin_token=ADMIN,
        )
        for _ in range(2)
    ]
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=r.app), base_url="http://wr")
        for r in rooms
    ]
    try:
        yield Env(rooms, clients, repository, sql_database, fake_clock)
    finally:
        for c in clients:
            await c.aclose()
        await client.aclose()


async def _ready(env: Env, user: str, business_id: str = T) -> str:
    """A token of ``user``, admitted."""
    http = env.http[0]
    token = (
        await http.post("/queue/enqueue", headers={"business_id": business_id, "user_id": user})
    ).json()["jwt"]
    env.clock.advance(5)
    await env.rooms[0].worker.run_once()
    return str(token)


async def test_the_public_id_cannot_take_over_the_tenant(env: Env) -> None:
    """With the public id, POST/GET /config, verify and finish are 403 naming the key needed,
    and nothing changes; the secret key, or the public id with the admin token, may."""
    http = env.http[0]
    takeover = {"admission_limit": 100000, "ip_enqueue_limit": 1000000}
    for body in (takeover, {"admission_limit": 1, "admission_frequency": 3600}):
        refused = await http.post("/config", headers={"business_id": T}, json=body)
        assert refused.status_code == 403
        assert refused.json()["needed"] == "secret_key"
        assert "secret key" in refused.json()["detail"]
    assert (await http.get("/config", headers={"business_id": T})).status_code == 403
    token = await _ready(env, "alice")
    for method, path in (("GET", "/queue/verify"), ("DELETE", "/queue/finish")):
        public = await http.request(method, path, headers={"business_id": T, "jwt": token})
        assert public.status_code == 403, path
        assert public.json()["needed"] == "secret_key"
    # Nothing changed: the config is the default one, alice is still ready.
    config = (await http.get("/config", headers={"business_id": KEY})).json()["updated_config"]
    assert (config["admission_limit"], config["ip_enqueue_limit"]) == (10, 100)
    verified = await http.get("/queue/verify", headers={"business_id": KEY, "jwt": token})
    assert verified.json() == {"message": "User is ready", "ready": True}
    # The admin token with the public id works too; a wrong bearer does not.
    admin = await http.post(
        "/config", headers={"business_id": T, **BEARER}, json={"admission_limit": 7}
    )
    assert admin.json()["updated_config"]["admission_limit"] == 7
    wrong = await http.post(
        "/config",
        headers={"business_id": T, "Authorization": "Bearer nope"},
        json={"admission_limit": 8},
    )
    assert wrong.status_code == 403
    # Unknown tenants and malformed or unknown keys stay 401.
    for business_id in ("nope", "gkwr_x", new_secret()):
        unknown = await http.get("/config", headers={"business_id": business_id})
        assert unknown.status_code == 401, business_id


async def test_browsers_need_only_the_public_id_and_the_secret_key_works_there_too(
    env: Env,
) -> None:
    """Enqueue, status, events and the hosted page take the public id; a secret key in their
    place names the same tenant (the same queue)."""
    http = env.http[1]
    first = await http.post("/queue/enqueue", headers={"business_id": T, "user_id": "a"})
    assert first.status_code == 200
    second = await http.post("/queue/enqueue", headers={"business_id": KEY, "user_id": "b"})
    assert second.json()["position"] == 2
    token = first.json()["jwt"]
    for business_id in (T, KEY):
        status = await http.get("/queue/status", headers={"business_id": business_id, "jwt": token})
        assert status.json()["position"] == 1
    ready = await _ready(env, "c")  # (an event stream ends once ready)
    events = await http.get(f"/queue/events?business_id={T}&jwt={ready}")
    assert events.headers["content-type"].startswith("text/event-stream")
    assert '"ready":true' in events.text
    assert (await http.get(f"/queue/wait?business_id={T}")).status_code == 200


async def test_keys_are_stored_hashed_and_only_shown_when_issued(env: Env) -> None:
    """The database holds a prefix and a SHA-256 digest, never the key; the admin API shows the
    key once (on creation), then only prefixes."""
    created = await env.http[0].post(
        "/admin/tenants", headers=BEARER, json={"business_id": "cafe", "admission_limit": 4}
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret_key"]
    assert created.json()["admission_limit"] == 4
    async with env.database.transaction() as session:
        rows = (await session.scalars(select(TenantKey))).all()
        dump = str((await session.execute(text("SELECT * FROM tenant_keys"))).all())
    assert {r.business_id for r in rows} == {T, "cafe"}
    for raw in (secret, KEY):
        assert raw not in dump
        assert hashlib.sha256(raw.encode()).hexdigest() in dump
        assert raw.split("_")[1] in dump  # the prefix, which finds the row
    shown = await env.http[1].get("/admin/tenants/cafe", headers=BEARER)
    assert secret not in shown.text
    assert [k["prefix"] for k in shown.json()["keys"]] == [secret.split("_")[1]]
    enqueued = await env.http[1].post(
        "/queue/enqueue", headers={"business_id": "cafe", "user_id": "u"}
    )
    assert enqueued.status_code == 200
    config = await env.http[1].get("/config", headers={"business_id": secret})
    assert config.json()["updated_config"]["admission_limit"] == 4


async def test_rotation_keeps_the_old_key_for_the_overlap_then_refuses_it(env: Env) -> None:
    """rotate_secret issues a new key at once; the old one works until the overlap ends (on
    every replica within the cache's lifetime), then is 401; overlap 0 ends it now."""
    http = env.http[0]
    rotated = await http.post(
        f"/admin/tenants/{T}/rotate_secret", headers=BEARER, json={"overlap_seconds": 60}
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret_key"]
    assert new != KEY
    for replica in env.http:
        for key in (KEY, new):
            assert (await replica.get("/config", headers={"business_id": key})).status_code == 200
    env.clock.advance(61 + CACHE)
    for replica in env.http:
        old = await replica.get("/config", headers={"business_id": KEY})
        assert old.status_code == 401
        assert "expired" in old.json()["detail"]
        assert (await replica.get("/config", headers={"business_id": new})).status_code == 200
    again = await http.post(
        f"/admin/tenants/{T}/rotate_secret", headers=BEARER, json={"overlap_seconds": 0}
    )
    newest = again.json()["secret_key"]
    assert (await http.get("/config", headers={"business_id": new})).status_code == 401
    assert (await http.get("/config", headers={"business_id": newest})).status_code == 200
    env.clock.advance(CACHE)
    assert (await env.http[1].get("/config", headers={"business_id": new})).status_code == 401
    bad = await http.post(
        f"/admin/tenants/{T}/rotate_secret", headers=BEARER, json={"overlap_seconds": True}
    )
    assert bad.status_code == 422
    missing = await http.post("/admin/tenants/ghost/rotate_secret", headers=BEARER, json={})
    assert missing.status_code == 404
    anonymous = await http.post(f"/admin/tenants/{T}/rotate_secret", json={})
    assert anonymous.status_code == 401


async def test_the_key_rule_is_the_guard_of_the_backend_endpoints_and_is_documented(
    env: Env,
) -> None:
    """verify, finish and /config are guarded (checked before their parameters: a public id
    with a bad jwt header is still 403) and their OpenAPI operations name the tenantSecretKey
    scheme (the business_id header) or the admin token, with the 401 and 403 answers;
    enqueue and status stay open to the public id."""
    http = env.http[0]
    too_long = {"business_id": T, "jwt": "x" * 5000}
    guarded = await http.get("/queue/verify", headers=too_long)
    assert guarded.status_code == 403
    assert guarded.headers["content-type"] == "application/problem+json"
    assert (guarded.json()["error"], guarded.json()["needed"]) == ("forbidden", "secret_key")
    assert (
        await http.get("/queue/verify", headers={**too_long, "business_id": KEY})
    ).status_code == 422
    spec = openapi_document(env.rooms[0].dispatcher.endpoints)
    scheme = spec["components"]["securitySchemes"]["tenantSecretKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "business_id")
    assert spec["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    for path, method in (
        ("/queue/verify", "get"),
        ("/queue/finish", "delete"),
        ("/config", "get"),
        ("/config", "post"),
    ):
        operation = spec["paths"][path][method]
        assert operation["security"] == [{"tenantSecretKey": []}, {"adminToken": []}], path
        assert {"401", "403"} <= set(operation["responses"]), path
        forbidden = operation["responses"]["403"]["content"]["application/problem+json"]
        assert forbidden["schema"] == {"$ref": "#/components/schemas/Problem"}
    for path, method in (("/queue/enqueue", "post"), ("/queue/status", "get")):
        assert "security" not in spec["paths"][path][method], path
        assert "403" not in spec["paths"][path][method]["responses"], path
    admin = spec["paths"]["/admin/tenants/{business_id}/rotate_secret"]["post"]
    assert admin["security"] == [{"adminToken": []}]


async def test_hot_paths_resolve_the_tenant_from_the_process_cache(env: Env) -> None:
    """Enqueue and status polls by public id, and verifications by secret key, read the
    database once per cache lifetime, not once per request."""
    http = env.http[0]
    token = await _ready(env, "warm")
    await http.get("/queue/verify", headers={"business_id": KEY, "jwt": token})
    env.repository.reads = 0
    for i in range(50):
        await http.post("/queue/enqueue", headers={"business_id": T, "user_id": f"h{i}"})
        await http.get("/queue/status", headers={"business_id": T, "jwt": token})
        await http.get("/queue/verify", headers={"business_id": KEY, "jwt": token})
    assert env.repository.reads == 0
    env.clock.advance(CACHE)
    await http.get("/queue/verify", headers={"business_id": KEY, "jwt": token})
    assert env.repository.reads == 2  # the config and the key, once each


async def test_business_ids_setting_maps_to_public_ids_and_env_keys(env: Env) -> None:
    """GATEKEEPER_BUSINESS_IDS: "shop" creates a keyless tenant, "shop=<key>" sets its env keys
    to exactly those listed (a key dropped from the list ends at the next start); admin keys are
    kept; malformed entries are refused at start."""
    repository = env.repository
    second = new_secret()
    await repository.ensure([f"{T}={KEY}", f"{T}={second}", "bare"])
    assert {k.prefix for k in (await repository.record(T)).keys} >= {KEY[5:13], second[5:13]}  # type: ignore[union-attr]
    assert (await repository.record("bare")).keys == ()  # type: ignore[union-attr]
    admin_key = (
        await env.http[0].post(
            f"/admin/tenants/{T}/rotate_secret", headers=BEARER, json={"overlap_seconds": 3600}
        )
    ).json()["secret_key"]
    await repository.ensure([f"{T}={second}"])
    env.clock.advance(CACHE)
    http = env.http[1]
    assert (await http.get("/config", headers={"business_id": KEY})).status_code == 401
    assert (await http.get("/config", headers={"business_id": second})).status_code == 200
    assert (await http.get("/config", headers={"business_id": admin_key})).status_code == 200
    # A keyless tenant: its backend calls need the admin token until a key is issued.
    assert (await http.get("/config", headers={"business_id": "bare"})).status_code == 403
    assert (await http.get("/config", headers={"business_id": "bare", **BEARER})).status_code == 200
    for bad in (["shop=secret"], ["gkwr_abc"], ["a b"], [f"x={KEY[:-1]}"]):
        with pytest.raises(ConfigurationError, match="GATEKEEPER_BUSINESS_IDS"):
            await repository.ensure(bad)
        with pytest.raises(ConfigurationError, match="GATEKEEPER_BUSINESS_IDS"):
            MemoryConfigRepository(bad)


def test_serve_refuses_a_malformed_business_ids_entry_in_one_line(tmp_path: Path) -> None:
    """`gatekeeper serve` (and --check) name a bad GATEKEEPER_BUSINESS_IDS key and exit 1."""
    conf = tmp_path / "gk.yaml"
    conf.write_text("listener: {host: 127.0.0.1, port: 8080}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env["GATEKEEPER_BUSINESS_IDS"] = "shop=not-a-key"
    for extra in ([], ["--check"]):
        done = subprocess.run(
            [sys.executable, "-m", "gatekeeper", "serve", "--config", str(conf), *extra],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            "gatekeeper serve: GATEKEEPER_BUSINESS_IDS: the key given for 'shop' is not a tenant "
            "secret key (gkwr_<8 hex>_<43 characters>; `gatekeeper tenant-key` prints one)"
        ]
