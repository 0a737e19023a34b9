"""The pure-ASGI middleware through httpx.ASGITransport, on the memory store and a fake clock."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest

from gatekeeper.limits.keys import by_api_key, by_header, by_user, first_of
from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.middleware import RateLimitMiddleware, RouteLimit
from gatekeeper.limits.policy import Policy
from gatekeeper.limits.storage import storage_from_url
from gatekeeper.testing import FakeClock

Scope = MutableMapping[str, Any]


class App:
    """A bare ASGI app answering 200 "ok"; records scopes it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.seen.append(scope["type"])
        if scope["type"] == "lifespan":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})


def client(app: Any, peer: str = "198.51.100.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
def limiter(fake_clock: FakeClock) -> Limiter:
    return Limiter(storage_from_url("memory://", clock=fake_clock), clock=fake_clock)


async def test_admitted_responses_carry_headers_and_denials_get_a_429(limiter: Limiter) -> None:
    """Two requests pass with RateLimit fields; the third is a 429 problem that skips the app."""
    app = App()
    wrapped = RateLimitMiddleware(app, limiter=limiter, policies=[Policy.parse("ip", "2/minute")])
    async with client(wrapped) as http:
        first = await http.get("/a")
        second = await http.get("/a")
        third = await http.get("/a")
    assert first.status_code == second.status_code == 200
    assert first.headers["x-app"] == "1"
    assert first.headers["ratelimit-policy"] == '"ip";q=2;w=60'
    assert first.headers["ratelimit"].startswith('"ip";r=1;t=')
    assert third.status_code == 429
    assert third.headers["content-type"] == "application/problem+json"
    assert int(third.headers["retry-after"]) >= 1
    assert third.json()["policy"] == "ip"
    assert app.seen.count("http") == 2


async def test_exempt_paths_and_non_http_scopes_pass_through(limiter: Limiter) -> None:
    """/health is never limited; lifespan scopes reach the app untouched."""
    app = App()
    wrapped = RateLimitMiddleware(app, limiter=limiter, policies=[Policy.parse("ip", "1/minute")])
    async with client(wrapped) as http:
        statuses = [(await http.get("/health")).status_code for _ in range(5)]
    assert statuses == [200] * 5
    await wrapped({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert app.seen[-1] == "lifespan"


async def test_route_policies_match_by_prefix_and_method(limiter: Limiter) -> None:
    """POST /login has its own tight limit; GET /login and other paths use the default."""
    login = RouteLimit("/login", [Policy.parse("login", "1/minute")], methods={"POST"})
    wrapped = RateLimitMiddleware(
        App(), limiter=limiter, policies=[Policy.parse("ip", "100/minute")], routes=[login]
    )
    async with client(wrapped) as http:
        assert (await http.post("/login")).status_code == 200
        denied = await http.post("/login/")
        assert denied.status_code == 429
        assert denied.json()["policy"] == "login"
        assert (await http.get("/login")).status_code == 200
        other = await http.get("/loginx")
        assert other.headers["ratelimit-policy"].startswith('"ip"')


async def test_forwarded_for_is_believed_only_from_trusted_proxies(limiter: Limiter) -> None:
    """Behind a trusted proxy X-Forwarded-For tells clients apart; otherwise it is ignored."""
    policy = Policy.parse("ip", "1/minute")
    trusting = RateLimitMiddleware(
        App(), limiter=limiter, policies=[policy], trusted_proxies=["10.0.0.0/8"]
    )
    async with client(trusting, peer="10.1.2.3") as http:
        a = await http.get("/", headers={"x-forwarded-for": "203.0.113.1"})
        b = await http.get("/", headers={"x-forwarded-for": "203.0.113.2, 10.9.9.9"})
        a_again = await http.get("/", headers={"x-forwarded-for": "203.0.113.1"})
    assert (a.status_code, b.status_code, a_again.status_code) == (200, 200, 429)
    untrusting = RateLimitMiddleware(
        App(), limiter=limiter, policies=[Policy.parse("ip2", "1/minute")]
    )
    async with client(untrusting, peer="192.0.2.50") as http:
        first = await http.get("/", headers={"x-forwarded-for": "203.0.113.3"})
        spoofed = await http.get("/", headers={"x-forwarded-for": "203.0.113.4"})
    assert (first.status_code, spoofed.status_code) == (200, 429)


async def test_api_keys_are_limited_separately_and_keyless_requests_fall_back(
    limiter: Limiter,
) -> None:
    """Each API key has its own quota; without a key, the client IP is the subject."""
    wrapped = RateLimitMiddleware(
        App(),
        limiter=limiter,
        policies=[Policy.parse("key", "1/minute")],
        key=first_of(by_api_key(), by_header("x-never")),
    )
    async with client(wrapped) as http:
        assert (await http.get("/", headers={"x-api-key": "alpha"})).status_code == 200
        assert (await http.get("/", headers={"x-api-key": "alpha"})).status_code == 429
        assert (await http.get("/", params={"api_key": "beta"})).status_code == 200
        # No key and no header: this policy does not apply, the request passes unlimited.
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/")).status_code == 200


async def test_per_policy_key_functions(limiter: Limiter) -> None:
    """One request may be limited per IP AND per user, each policy with its own subject."""

    class User:
        id = 42

    async def with_user(scope: Scope, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["principal"] = User()
        await wrapped(scope, receive, send)

    wrapped = RateLimitMiddleware(
        App(),
        limiter=limiter,
        policies=[Policy.parse("ip", "10/minute"), (Policy.parse("user", "1/minute"), by_user)],
    )
    async with client(with_user) as http:
        ok = await http.get("/")
        denied = await http.get("/")
    assert ok.status_code == 200
    assert '"user"' in ok.headers["ratelimit-policy"]
    assert denied.status_code == 429
    assert denied.json()["policy"] == "user"


async def test_concurrency_slots_are_released_after_the_response(limiter: Limiter) -> None:
    """A concurrency policy of 1 admits sequential requests: each gives its slot back."""
    wrapped = RateLimitMiddleware(
        App(),
        limiter=limiter,
        policies=[Policy.parse("inflight", "1/second", algorithm="concurrency")],
    )
    async with client(wrapped) as http:
        statuses = [(await http.get("/")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]


async def test_legacy_headers_on_request(limiter: Limiter) -> None:
    """legacy_headers=True adds the X-RateLimit trio."""
    wrapped = RateLimitMiddleware(
        App(), limiter=limiter, policies=[Policy.parse("ip", "5/minute")], legacy_headers=True
    )
    async with client(wrapped) as http:
        response = await http.get("/")
    assert response.headers["x-ratelimit-limit"] == "5"
    assert response.headers["x-ratelimit-remaining"] == "4"


def test_bad_trusted_proxy_is_a_configuration_error(limiter: Limiter) -> None:
    """A trusted proxy that is not an IP or CIDR is refused, naming it."""
    from gatekeeper.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not-an-ip"):
        RateLimitMiddleware(App(), limiter=limiter, trusted_proxies=["not-an-ip"])


async def test_route_methods_are_case_insensitive_and_prefixes_checked(limiter: Limiter) -> None:
    """methods={"post"} matches POST; a prefix without a leading slash is refused."""
    from gatekeeper.errors import ConfigurationError

    route = RouteLimit("/api", [Policy.parse("api", "1/minute")], methods={"post"})
    assert route.matches("/api/x", "POST")
    assert not route.matches("/api/x", "GET")
    with pytest.raises(ConfigurationError, match="must start with"):
        RouteLimit("api", [])
