"""The FastAPI dependency: headers on success, a 429 with headers and a problem body on denial."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Depends, FastAPI

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.decision import Decision
from gatekeeper.limits.dependency import (
    RateLimit,
    RateLimitHTTPException,
    rate_limit_exception_handler,
)
from gatekeeper.limits.keys import by_header
from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.policy import Policy
from gatekeeper.limits.storage import storage_from_url
from gatekeeper.testing import FakeClock


def build(limiter: Limiter, *, handler: bool) -> FastAPI:
    app = FastAPI()
    per_ip = RateLimit(limiter, Policy.parse("per-ip", "2/minute"))
    per_tenant = RateLimit(limiter, [Policy.parse("tenant", "1/minute")], key=by_header("x-tenant"))

    @app.get("/items", dependencies=[Depends(per_ip)])
    async def items() -> list[str]:
        return ["a"]

    @app.get("/tenant")
    async def tenant(decision: Decision = Depends(per_tenant)) -> dict[str, int]:
        return {"remaining": decision.remaining}

    if handler:
        app.add_exception_handler(RateLimitHTTPException, rate_limit_exception_handler)
    return app


@pytest.fixture
def limiter(fake_clock: FakeClock) -> Limiter:
    return Limiter(storage_from_url("memory://", clock=fake_clock), clock=fake_clock)


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_dependency_sets_headers_then_raises_429(limiter: Limiter) -> None:
    """Admitted calls get RateLimit fields; the third call is a 429 with Retry-After."""
    async with client(build(limiter, handler=False)) as http:
        ok = await http.get("/items")
        await http.get("/items")
        denied = await http.get("/items")
    assert ok.status_code == 200
    assert ok.json() == ["a"]
    assert ok.headers["ratelimit-policy"] == '"per-ip";q=2;w=60'
    assert denied.status_code == 429
    assert int(denied.headers["retry-after"]) >= 1
    assert denied.json()["detail"]["policy"] == "per-ip"


async def test_exception_handler_renders_a_problem_document(limiter: Limiter) -> None:
    """With the handler installed the 429 body is application/problem+json."""
    async with client(build(limiter, handler=True)) as http:
        await http.get("/items")
        await http.get("/items")
        denied = await http.get("/items")
    assert denied.status_code == 429
    assert denied.headers["content-type"] == "application/problem+json"
    assert denied.json()["title"] == "Too Many Requests"
    assert "ratelimit" in denied.headers


async def test_dependency_returns_the_decision_and_skips_keyless_requests(
    limiter: Limiter,
) -> None:
    """Endpoints can read the decision; a request without the key header is not limited."""
    async with client(build(limiter, handler=True)) as http:
        first = await http.get("/tenant", headers={"x-tenant": "acme"})
        second = await http.get("/tenant", headers={"x-tenant": "acme"})
        keyless = [await http.get("/tenant") for _ in range(3)]
    assert first.json() == {"remaining": 0}
    assert second.status_code == 429
    assert all(r.status_code == 200 for r in keyless)


def test_dependency_refuses_concurrency_policies(limiter: Limiter) -> None:
    """A dependency cannot hold a lease across the response, so it refuses concurrency."""
    with pytest.raises(ConfigurationError, match="concurrency"):
        RateLimit(limiter, Policy.parse("c", "1/second", algorithm="concurrency"))
