"""Operational endpoints (/dashboard*, /stats, /api/metrics, /metrics) answer only to the
admin token or to clients inside ``operator_networks`` (loopback unless configured)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from gatekeeper.app import Gateway
from gatekeeper.gateway.config import ConfigFileError, parse_config
from gatekeeper.gateway.mock_backend import MockBackend
from gatekeeper.settings import Settings
from tests.integration.gateway_fixtures import ADMIN_TOKEN, config_for

OPERATIONAL = ["/dashboard", "/dashboard/snapshot", "/stats", "/api/metrics", "/metrics"]
PUBLIC = ["/health", "/api/v1/rate-status"]
REMOTE = {"x-forwarded-for": "203.0.113.9"}  # through the trusted proxy (the test itself)


def _write(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config))


@asynccontextmanager
async def _gateway(config: dict[str, Any], path: Path) -> AsyncIterator[Gateway]:
    database = f"sqlite+aiosqlite:///{path.parent / 'gk.db'}"
    settings = Settings(admin_token=SecretStr(ADMIN_TOKEN), database_url=database)
    gateway = Gateway(
        settings,
        parse_config(config),
        port=0,
        config_path=str(path),
        components=("gatekeeper.observability.component:create_component",),
    )
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


async def test_operational_endpoints_need_the_token_or_an_operator_network(
    tmp_path: Path,
) -> None:
    """A remote client gets 401 (no token) or 403 (wrong token) on every operational endpoint,
    200 with the admin token; loopback is allowed by default; a network added to
    operator_networks by a reload is allowed at once; public endpoints stay public."""
    config = config_for([MockBackend("x").url], trusted_proxies=["127.0.0.1/32"])
    path = tmp_path / "gatekeeper.yaml"
    _write(path, config)
    async with _gateway(config, path) as gateway:  # noqa: SIM117
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            for target in OPERATIONAL:
                anonymous = await http.get(target, headers=REMOTE)
                assert anonymous.status_code == 401, target
                assert anonymous.headers["www-authenticate"].startswith("Bearer")
                assert anonymous.headers["content-type"] == "application/problem+json"
                assert anonymous.json()["error"] == "unauthorized"
                wrong = await http.get(target, headers={**REMOTE, "authorization": "Bearer no"})
                assert wrong.status_code == 403, target
                token = {**REMOTE, "authorization": f"Bearer {ADMIN_TOKEN}"}
                assert (await http.get(target, headers=token)).status_code == 200, target
                assert (await http.get(target)).status_code == 200, target  # loopback
            for target in PUBLIC:
                assert (await http.get(target, headers=REMOTE)).status_code == 200, target
            config["operator_networks"] = ["127.0.0.0/8", "203.0.113.0/24"]
            _write(path, config)
            admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
            assert (await http.post("/admin/reload", headers=admin)).status_code == 200
            for target in OPERATIONAL:
                assert (await http.get(target, headers=REMOTE)).status_code == 200, target
            other = {"x-forwarded-for": "198.51.100.1"}
            assert (await http.get("/stats", headers=other)).status_code == 401


def test_operator_networks_are_validated_and_default_to_loopback() -> None:
    """The setting defaults to loopback; a value that is not a network is a configuration
    error naming the field."""
    defaults = parse_config({}).operator_networks
    assert [str(n) for n in defaults] == ["127.0.0.0/8", "::1/128"]
    with pytest.raises(ConfigFileError, match="operator_networks"):
        parse_config({"operator_networks": ["not-a-network"]})
