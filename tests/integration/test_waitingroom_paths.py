"""The waiting room's endpoints answer alike on the gateway's listener and over ASGI.

Two gateways run the same script of requests: one is reached on its listener (the endpoint
table served by the gateway), the other's table through the ASGI adapter
(``gatekeeper.endpoints.asgi_app``). Each has its own in-process store and limiter and the same
fake clock, so the same requests must get the same answers: status, headers, JSON bodies
(tokens compared by their claims: their ``jti`` is random per process).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.endpoints import asgi_app
from gatekeeper.gateway.config import parse_config
from gatekeeper.persistence.db import Database
from gatekeeper.persistence.migrate import upgrade
from gatekeeper.settings import Settings
from gatekeeper.testing import FakeClock
from gatekeeper.waitingroom.testing import TEST_TENANT_KEY
from tests.integration.gateway_fixtures import config_for

T = "shop"
KEY = TEST_TENANT_KEY
SECRET = SecretStr("native-test-secret-0123456789abcdef")
# Headers whose values legitimately differ between two processes.
_VOLATILE = {"date", "server"}


@asynccontextmanager
async def _gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, *, name: str
) -> AsyncIterator[Gateway]:
    """A gateway with the waiting room (memory store and limiter, own SQLite database)."""
    monkeypatch.setenv("GATEKEEPER_WAITINGROOM_EMBEDDED_WORKER", "false")
    database_url = f"sqlite+aiosqlite:///{tmp_path / (name + '.db')}"
    database = Database(database_url)
    await upgrade(database)
    await database.aclose()
    settings = Settings(database_url=database_url, business_ids=[f"{T}={KEY}"], jwt_secret=SECRET)
    gateway = Gateway(
        settings,
        parse_config(config_for(["http://127.0.0.1:9"])),
        port=0,
        clock=clock,
        components=("gatekeeper.waitingroom.component:create_component",),
    )
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    claims.pop("jti", None)
    return claims


def _normal(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """What must be equal on both paths: status, headers (but Date/Server), body (tokens by
    their claims)."""
    headers = {k: v for k, v in response.headers.items() if k not in _VOLATILE}
    body: Any = response.json()
    if isinstance(body, dict):
        for key in ("jwt", "jwt_token"):
            if body.get(key):
                body[key] = _claims(body[key])
                headers.pop("content-length", None)  # token lengths differ with the jti
    return response.status_code, headers, body


Step = Callable[[httpx.AsyncClient, dict[str, str]], Any]


async def test_the_listener_and_asgi_answer_the_same_script_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enqueue/status/verify: success, duplicate, 400, 401, 403, 422, 429 and request ids all
    match between the gateway's listener and the ASGI adapter."""
    clock = FakeClock()
    async with (
        _gateway(tmp_path, monkeypatch, clock, name="listener") as served,
        _gateway(tmp_path, monkeypatch, clock, name="asgi") as other,
    ):
        transport = httpx.ASGITransport(
            app=asgi_app(other.runtime.dispatcher), client=("127.0.0.1", 40000)
        )
        async with (
            httpx.AsyncClient(base_url=served.url) as a,
            httpx.AsyncClient(transport=transport, base_url="http://gatekeeper.test") as b,
        ):

            async def same(method: str, path: str, **kw: Any) -> tuple[Any, Any]:
                # A fixed request id: a fresh one would differ (its echo is checked below).
                kw["headers"] = {"x-request-id": "same", **kw["headers"]}
                ra = await a.request(method, path, **kw)
                rb = await b.request(method, path, **kw)
                assert _normal(ra) == _normal(rb), (method, path, kw)
                return ra.json(), ra

            rid = {"x-request-id": "req-42"}
            first, resp = await same(
                "POST", "/queue/enqueue", headers={"business_id": T, "user_id": "u1", **rid}
            )
            assert resp.headers["x-request-id"] == "req-42"
            assert first["position"] == 1
            assert first["jwt"]
            again, _ = await same(
                "POST", "/queue/enqueue", headers={"business_id": T, "user_id": "u1"}
            )
            assert again["jwt"] == ""
            second, _ = await same(
                "POST", "/queue/enqueue?x=1", headers={"business_id": T, "user_id": "u2"}
            )
            assert second["position"] == 2
            await same("POST", "/queue/enqueue", headers={"user_id": "u3"})  # 400
            await same("POST", "/queue/enqueue", headers={"business_id": T})  # 400
            await same("POST", "/queue/enqueue", headers={"business_id": "nope", "user_id": "x"})
            await same("POST", "/queue/enqueue", headers={"business_id": T, "user_id": "u" * 300})
            # Each path's own token, so that both see a valid one of their own.
            ta = (await a.post("/queue/enqueue", headers={"business_id": T, "user_id": "p"})).json()
            tb = (await b.post("/queue/enqueue", headers={"business_id": T, "user_id": "p"})).json()
            for path in ("/queue/status", "/queue/verify"):
                # verify is the backend's: its secret key (status takes the public id).
                biz = KEY if path == "/queue/verify" else T
                own = {"business_id": biz, "x-request-id": "own"}
                ra = await a.get(path, headers={**own, "jwt": ta["jwt"]})
                rb = await b.get(path, headers={**own, "jwt": tb["jwt"]})
                assert _normal(ra) == _normal(rb)
                assert ra.status_code == 200
                await same("GET", path, headers={"business_id": biz, "jwt": "not.a.token"})
                await same("GET", path, headers={"business_id": biz})
                await same("GET", path, headers={"business_id": "nope", "jwt": ta["jwt"]})
                await same("GET", path, headers={"jwt": ta["jwt"]})
            public, _ = await same("GET", "/queue/verify", headers={"business_id": T, "jwt": "x"})
            assert public["needed"] == "secret_key"
            # The same per-IP limit: enqueue until both refuse with the same 429 + Retry-After.
            limited = None
            for i in range(200):
                _, resp = await same(
                    "POST", "/queue/enqueue", headers={"business_id": T, "user_id": f"f{i}"}
                )
                if resp.status_code == 429:
                    limited = resp
                    break
            assert limited is not None
            assert limited.headers["retry-after"]
            # A request id that is not sane is replaced by a fresh one on both paths.
            bad = {"business_id": T, "user_id": "u1", "x-request-id": "bad id\t!"}
            ra = await a.post("/queue/enqueue", headers=bad)
            rb = await b.post("/queue/enqueue", headers=bad)
            assert len(ra.headers["x-request-id"]) == len(rb.headers["x-request-id"]) == 32


async def test_endpoints_are_documented_once_and_other_methods_are_405(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAPI lists the hot endpoints with their header parameters; another method is a 405
    naming the allowed ones, a trailing slash a 404, a bad token a 401."""
    async with _gateway(tmp_path, monkeypatch, FakeClock(), name="docs") as gateway:  # noqa: SIM117
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            spec = (await http.get("/openapi.json")).json()
            enqueue = spec["paths"]["/queue/enqueue"]["post"]
            assert {p["name"] for p in enqueue["parameters"]} == {"business_id", "user_id"}
            assert "get" in spec["paths"]["/queue/status"]
            wrong = await http.get("/queue/enqueue")
            assert wrong.status_code == 405
            assert wrong.headers["allow"] == "POST"
            slash = await http.post("/queue/enqueue/", headers={"business_id": T})
            assert slash.status_code == 404
            finish = await http.delete("/queue/finish", headers={"business_id": T, "jwt": "x.y"})
            assert finish.status_code == 403  # the public id: finish needs the secret key
            finish = await http.delete("/queue/finish", headers={"business_id": KEY, "jwt": "x.y"})
            assert finish.status_code == 401
            assert finish.headers["content-type"] == "application/problem+json"
