"""Request ids: the built-in API and proxied routes both answer with ``X-Request-ID``, the same
id the upstream received."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gatekeeper.app import Gateway
from gatekeeper.gateway.config import parse_config
from gatekeeper.settings import Settings
from tests.integration.gateway_fixtures import backends, config_for


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with the observability component; ``/api`` allows 2 requests per minute."""
    async with backends(1) as started:
        data = config_for([started[0].url], policies={"two": {"rate": "2/minute"}})
        data["routes"][0]["limits"] = ["two"]
        gateway = Gateway(
            Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}", log_level="error"),
            parse_config(data),
            host="127.0.0.1",
            port=0,
            components=("gatekeeper.observability.component:create_component",),
        )
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
                yield client
        finally:
            await gateway.stop()


async def test_builtin_api_echoes_or_assigns_a_request_id(http: httpx.AsyncClient) -> None:
    """/health answers with the client's X-Request-ID, or with a fresh one when none was sent."""
    given = await http.get("/health", headers={"X-Request-ID": "seams-abc-123"})
    assert given.headers["x-request-id"] == "seams-abc-123"
    fresh = (await http.get("/health")).headers["x-request-id"]
    assert len(fresh) >= 16


async def test_proxied_answers_carry_the_id_the_upstream_saw(http: httpx.AsyncClient) -> None:
    """A proxied 200 echoes the id the backend received; a 429 from the limit carries one too."""
    first = await http.get("/api/x")
    assert first.status_code == 200
    seen = first.json()["headers"]["x-request-id"]
    assert first.headers["x-request-id"] == seen
    given = await http.get("/api/x", headers={"X-Request-ID": "seams-given-1"})
    assert given.headers["x-request-id"] == "seams-given-1"
    assert given.json()["headers"]["x-request-id"] == "seams-given-1"
    limited = await http.get("/api/x", headers={"X-Request-ID": "seams-limited"})
    assert limited.status_code == 429
    assert limited.headers["x-request-id"] == "seams-limited"
    assert "ratelimit" in first.headers
