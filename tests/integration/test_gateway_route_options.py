"""Route options users of other gateways expect (issue 16), through the real gateway: CORS,
the rate-limit field style, tier-gated routes, composite limit keys, response timing, and the
balancing names they bring."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.config import parse_config
from gatekeeper.gateway.mock_backend import MockBackend
from gatekeeper.gateway.upstream.upstreams import build_pool
from gatekeeper.settings import Settings
from gatekeeper.testing import FakeClock
from tests.integration.gateway_fixtures import backends, config_for, running_gateway

ADMIN = "route-options-admin-token-0123456789"
PASSWORD = "correct horse battery"
ORIGIN = "https://app.example.com"


def _route(**extra: Any) -> dict[str, Any]:
    return {"name": "api", "path_prefix": "/api", "upstream": "backends", **extra}


@pytest.fixture
async def backend() -> AsyncIterator[MockBackend]:
    async with backends(1) as started:
        yield started[0]


@asynccontextmanager
async def _client(data: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        yield client


# -- CORS -------------------------------------------------------------------------------------


async def test_a_preflight_is_answered_by_the_gateway_never_forwarded_nor_limited(
    backend: MockBackend,
) -> None:
    """OPTIONS with Access-Control-Request-Method from an allowed origin: 204 with the allow
    fields, the backend never sees it, and the route's limit of 1 still admits the request."""
    data = config_for(
        [backend.url],
        policies={"one": {"rate": "1/minute", "algorithm": "fixed_window"}},
        routes=[
            _route(
                limits=["one"],
                cors={"allow_origins": [ORIGIN], "allow_headers": ["content-type", "x-api-key"]},
            )
        ],
    )
    async with _client(data) as http:
        preflight = {
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "Content-Type, X-API-Key",
        }
        for _ in range(3):
            answer = await http.options("/api/orders", headers=preflight)
            assert answer.status_code == 204
            assert answer.headers["access-control-allow-origin"] == ORIGIN
            assert "POST" in answer.headers["access-control-allow-methods"]
            assert answer.headers["access-control-allow-headers"] == "content-type, x-api-key"
            assert answer.headers["access-control-max-age"] == "600"
            assert "origin" in answer.headers["vary"].lower()
        before = backend.requests
        admitted = await http.post("/api/orders", headers={"origin": ORIGIN}, content=b"{}")
        assert admitted.status_code == 200  # the preflights did not spend the one request
        assert admitted.headers["access-control-allow-origin"] == ORIGIN
        exposed = admitted.headers["access-control-expose-headers"]
        assert "ratelimit" in exposed
        assert "retry-after" in exposed
        limited = await http.post("/api/orders", headers={"origin": ORIGIN}, content=b"{}")
        assert limited.status_code == 429
        assert limited.headers["access-control-allow-origin"] == ORIGIN  # the page can read it
        assert backend.requests == before + 1


async def test_a_preflight_of_an_unknown_origin_method_or_header_is_refused_by_name(
    backend: MockBackend,
) -> None:
    """Refused preflights: 403 problems naming the origin, the method or the header."""
    cors = {"allow_origins": [ORIGIN], "allow_methods": ["GET"], "allow_headers": ["x-a"]}
    data = config_for([backend.url], routes=[_route(cors=cors)])
    async with _client(data) as http:

        async def preflight(
            origin: str, method: str, headers: str = "", client: httpx.AsyncClient = http
        ) -> httpx.Response:
            fields = {"origin": origin, "access-control-request-method": method}
            if headers:
                fields["access-control-request-headers"] = headers
            return await client.options("/api/x", headers=fields)

        other = await preflight("https://evil.example", "GET")
        assert (other.status_code, other.json()["error"]) == (403, "cors_refused")
        assert "https://evil.example" in other.json()["detail"]
        assert "DELETE" in (await preflight(ORIGIN, "DELETE")).json()["detail"]
        assert "x-b" in (await preflight(ORIGIN, "GET", "x-b")).json()["detail"]
        plain = await http.get("/api/x", headers={"origin": "https://evil.example"})
        assert plain.status_code == 200  # served, but the browser hides it from the page
        assert "access-control-allow-origin" not in plain.headers


@pytest.mark.parametrize(
    ("pattern", "origin", "allowed"),
    [
        ("https://*.example.com", "https://a.example.com", True),
        ("https://*.example.com", "https://a.b.example.com", True),
        ("https://*.example.com", "https://example.com", False),
        ("https://*.example.com", "http://a.example.com", False),
        (r"regex:^https://shop-\d+\.example\.org$", "https://shop-7.example.org", True),
        (r"regex:^https://shop-\d+\.example\.org$", "https://shop-x.example.org", False),
        ("*", "https://anything.test", True),
    ],
)
async def test_origins_match_exactly_by_wildcard_or_by_regex(
    backend: MockBackend, pattern: str, origin: str, allowed: bool
) -> None:
    """Wildcard subdomains, regular expressions and * decide which pages may read answers."""
    data = config_for([backend.url], routes=[_route(cors={"allow_origins": [pattern]})])
    async with _client(data) as http:
        answer = await http.get("/api/x", headers={"origin": origin})
    given = answer.headers.get("access-control-allow-origin")
    if not allowed:
        assert given is None
    elif pattern == "*":
        assert given == "*"
    else:
        assert given == origin


async def test_credentials_echo_the_origin_and_the_builtin_api_has_its_own_cors(
    backend: MockBackend,
) -> None:
    """With credentials, * echoes the origin (the Fetch standard forbids * then); the file's
    top-level cors serves the built-in endpoints, whose preflights are answered too."""
    data = config_for(
        [backend.url],
        routes=[_route(cors={"allow_origins": ["*"], "allow_credentials": True})],
        cors={"allow_origins": [ORIGIN]},
    )
    async with _client(data) as http:
        api = await http.get("/api/x", headers={"origin": "https://x.test"})
        assert api.headers["access-control-allow-origin"] == "https://x.test"
        assert api.headers["access-control-allow-credentials"] == "true"
        health = await http.get("/health", headers={"origin": ORIGIN})
        assert health.headers["access-control-allow-origin"] == ORIGIN
        pre = await http.options(
            "/health", headers={"origin": ORIGIN, "access-control-request-method": "GET"}
        )
        assert pre.status_code == 204


def test_a_bad_origin_is_refused_at_start() -> None:
    """serve --check names a malformed origin or regex."""
    for origin in ("app.example.com", "https://a.*.example.com", "regex:(("):
        with pytest.raises(ConfigurationError, match="allow_origins"):
            parse_config(config_for(["http://127.0.0.1:1"], routes=[_route(cors={
                "allow_origins": [origin]})]))  # fmt: skip


# -- rate-limit fields --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "ietf", "legacy"),
    [("ietf", True, False), ("legacy", False, True), ("both", True, True), ("none", False, False),
     (True, True, False), (False, False, False)],
)  # fmt: skip
async def test_the_rate_limit_fields_follow_the_route_and_429_always_says_retry_after(
    backend: MockBackend, style: Any, ietf: bool, legacy: bool
) -> None:
    """ietf, legacy (X-RateLimit-*), both or none on every answer; Retry-After on every 429."""
    data = config_for(
        [backend.url],
        policies={"two": {"rate": "2/minute", "algorithm": "fixed_window"}},
        routes=[_route(limits=["two"], ratelimit_headers=style)],
    )
    async with _client(data) as http:
        answers = [await http.get("/api/x") for _ in range(3)]
    first, _, denied = answers
    assert ("ratelimit" in first.headers) is ietf
    assert ("x-ratelimit-limit" in first.headers) is legacy
    if legacy:
        assert first.headers["x-ratelimit-limit"] == "2"
        assert first.headers["x-ratelimit-remaining"] == "1"
        assert int(first.headers["x-ratelimit-reset"]) > 0
    assert denied.status_code == 429
    assert int(denied.headers["retry-after"]) >= 1


# -- composite keys ---------------------------------------------------------------------------


async def test_a_composite_key_gives_one_bucket_per_client_and_path(backend: MockBackend) -> None:
    """key ip+path: two requests per path for one client, each path counted apart."""
    data = config_for(
        [backend.url],
        policies={"per": {"rate": "2/minute", "algorithm": "token_bucket"}},
        routes=[_route(limits=[{"policy": "per", "key": "ip+path"}])],
    )
    async with _client(data) as http:
        statuses = {
            path: [(await http.get(path)).status_code for _ in range(3)]
            for path in ("/api/a", "/api/b")
        }
    assert statuses == {"/api/a": [200, 200, 429], "/api/b": [200, 200, 429]}


def test_composite_keys_are_validated_part_by_part() -> None:
    """Each part of a composite key is checked and named when wrong."""
    route = _route(limits=[{"policy": "p", "key": "ip+header:X-User+segment:2+method"}])
    config = parse_config(
        config_for(["http://127.0.0.1:1"], policies={"p": {"rate": "1/s"}}, routes=[route])
    )
    assert config.routes[0].limits[0].key == "ip+header:x-user+segment:2+method"
    bad = _route(limits=[{"policy": "p", "key": "ip+cookie:sid"}])
    with pytest.raises(ConfigurationError, match="key part 'cookie:sid'"):
        parse_config(
            config_for(["http://127.0.0.1:1"], policies={"p": {"rate": "1/s"}}, routes=[bad])
        )


# -- response timing and balancing names --------------------------------------------------------


async def test_timing_fields_say_how_long_the_answer_took(backend: MockBackend) -> None:
    """X-Response-Time and Server-Timing (with the upstream's share) on timed routes only."""
    data = config_for(
        [backend.url],
        routes=[_route(timing=True), {"name": "b", "path_prefix": "/b", "upstream": "backends"}],
    )
    async with _client(data) as http:
        timed = await http.get("/api/x")
        plain = await http.get("/b/x")
    total = float(timed.headers["x-response-time"].removesuffix("ms"))
    assert 0 < total < 5000
    match = re.fullmatch(r"gatekeeper;dur=([\d.]+), upstream;dur=([\d.]+)", timed.headers[
        "server-timing"])  # fmt: skip
    assert match is not None
    assert float(match[2]) <= float(match[1])
    assert "x-response-time" not in plain.headers


def test_least_response_time_is_a_known_strategy() -> None:
    """Seed 004's strategy name is accepted: the latency-aware balancer."""
    data = config_for(["http://127.0.0.1:1"])
    data["upstreams"]["backends"]["strategy"] = "least_response_time"
    config = parse_config(data)
    pool = build_pool("backends", config.upstreams["backends"])
    assert pool.strategy == "adaptive"


# -- tier-gated routes ------------------------------------------------------------------------


@pytest.fixture
async def tiered(tmp_path: Path, backend: MockBackend) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with identity whose /premium route is for the premium and enterprise tiers."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}",
        auto_migrate=True,
        admin_token=SecretStr(ADMIN),
        jwt_secret=SecretStr("route-options-jwt-secret-0123456789"),
    )
    data = config_for(
        [backend.url],
        routes=[{"name": "premium", "path_prefix": "/premium", "upstream": "backends",
                 "tiers": ["premium", "enterprise"]}],
    )  # fmt: skip
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


async def test_a_tier_gated_route_admits_its_tiers_only(tiered: httpx.AsyncClient) -> None:
    """No credentials: 401; a free user: 403 naming the tiers; once upgraded: 200."""
    anonymous = await tiered.get("/premium/report")
    assert anonymous.status_code == 401
    registered = await tiered.post(
        "/auth/register", json={"email": "t@example.com", "password": PASSWORD}
    )
    assert registered.status_code == 201, registered.text
    token = {"authorization": f"Bearer {registered.json()['access_token']}"}
    free = await tiered.get("/premium/report", headers=token)
    assert free.status_code == 403
    body = free.json()
    assert (body["error"], body["tiers"], body["tier"]) == (
        "tier_required",
        ["enterprise", "premium"],
        "free",
    )
    upgraded = await tiered.post(
        "/admin/upgrade_tier",
        json={"user_id": registered.json()["user_id"], "tier": "premium"},
        headers={"authorization": f"Bearer {ADMIN}"},
    )
    assert upgraded.status_code == 200, upgraded.text
    assert (await tiered.get("/premium/report", headers=token)).status_code == 200
