"""The dashboard's geo panel in a real Chromium, against a `gatekeeper serve` with a geo route."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, expect

from gatekeeper.gateway.mock_backend import run_backends
from tests.e2e import test_dashboard_browser as dashboard
from tests.e2e.test_dashboard_browser import Demo, _open, _shot, _spawn, _wait_until_listening
from tests.geo_data import DATACENTERS, geo_section, write_mmdb
from tests.servers import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

browser = dashboard.browser  # the same Chromium fixture as the other dashboard tests


@pytest.fixture
async def geo_demo(tmp_path: Path) -> AsyncIterator[Demo]:
    """`gatekeeper serve` with three datacenters (one mock backend each) behind ``/api``,
    believing X-Forwarded-For from loopback."""
    backends = await run_backends(len(DATACENTERS))
    port = free_port()
    config = {
        "listener": {"host": "127.0.0.1", "port": port, "shutdown_grace": 1},
        "trusted_proxies": ["127.0.0.1/32"],
        "upstreams": {
            name: {"endpoints": [{"url": backend.url}]}
            for name, backend in zip(DATACENTERS, backends, strict=True)
        },
        "geo": geo_section(write_mmdb(tmp_path / "geo.mmdb")),
        "routes": [{"name": "geo", "path_prefix": "/api", "geo": True}],
    }
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(json.dumps(config))
    log = (tmp_path / "gatekeeper.log").open("wb")
    process = _spawn(path, tmp_path, log)
    try:
        await asyncio.to_thread(_wait_until_listening, process, port, tmp_path / "gatekeeper.log")
        yield Demo(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
        log.close()
        for backend in backends:
            await backend.stop()


async def test_geo_panel_shows_requests_by_datacenter_region_and_country(
    browser: Browser, geo_demo: Demo
) -> None:
    """Requests from London (twice) and Seattle show up in the panel, unreloaded: per
    datacenter, per region, per country, with distances."""
    w = await _open(browser, geo_demo, "/dashboard")
    page = w.page
    panel = page.locator("#geo")
    await expect(panel).to_be_visible(timeout=10_000)
    await expect(page.locator("#geo-datacenters tr")).to_have_count(3)
    async with httpx.AsyncClient(base_url=geo_demo.url) as client:
        for address in ("81.2.69.142", "81.2.69.143", "216.160.83.56"):
            response = await client.get("/api/x", headers={"X-Forwarded-For": address})
            assert response.status_code == 200
    await expect(page.locator("#geo-requests")).to_have_text("3", timeout=10_000)
    eu_west = page.locator("#geo-datacenters tr[data-datacenter=eu-west] td")
    await expect(eu_west.nth(3)).to_have_text("2")
    await expect(eu_west.nth(2)).to_have_text("serving")
    await expect(page.locator("#geo-regions")).to_contain_text("eu")
    await expect(page.locator("#geo-countries")).to_contain_text("GB")
    await expect(page.locator("#geo-p50")).to_contain_text("km")
    await expect(page.locator("#geo-database")).to_contain_text("Test-City")
    await _shot(page, "dashboard-geo.png")
    assert w.errors == []
    assert w.foreign == []


async def test_geo_panel_is_hidden_without_geo_routing(browser: Browser, tmp_path: Path) -> None:
    """A file without a geo: section shows no empty geo panel."""
    (backend,) = await run_backends(1)
    port = free_port()
    config = {
        "listener": {"host": "127.0.0.1", "port": port, "shutdown_grace": 1},
        "upstreams": {"u": {"endpoints": [{"url": backend.url}]}},
        "routes": [{"name": "api", "path_prefix": "/api", "upstream": "u"}],
    }
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(json.dumps(config))
    log = (tmp_path / "gatekeeper.log").open("wb")
    process = _spawn(path, tmp_path, log)
    try:
        await asyncio.to_thread(_wait_until_listening, process, port, tmp_path / "gatekeeper.log")
        w = await _open(browser, Demo(f"http://127.0.0.1:{port}", process), "/dashboard")
        await expect(w.page.locator("#pools article")).to_have_count(1, timeout=10_000)
        await expect(w.page.locator("#geo")).to_be_hidden()
        assert w.errors == []
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)
        log.close()
        await backend.stop()
