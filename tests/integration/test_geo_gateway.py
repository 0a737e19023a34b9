"""Geographic routing through the real gateway: three real backends are three datacenters.

Clients are told apart by ``X-Forwarded-For`` from loopback, which the gateway believes only
when ``trusted_proxies`` says so. Failover is driven by real health checks against backend
processes the tests kill and start again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatekeeper.app import Gateway
from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.config import parse_config
from gatekeeper.gateway.mock_backend import MockBackend, run_backends
from gatekeeper.settings import Settings
from tests.geo_data import DATACENTERS, geo_section, write_mmdb
from tests.integration.gateway_fixtures import ADMIN_TOKEN, running_gateway
from tests.integration.test_resilience_upstreams import BackendProcess, eventually
from tests.servers import launch_replica

LONDON, SEATTLE, TOKYO = "81.2.69.142", "216.160.83.56", "2001:218:1::5"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAST_CHECKS = {"interval": 0.05, "timeout": 0.5, "healthy_threshold": 2, "unhealthy_threshold": 2}
EU_STAYS = {"residency": [{"from": ["eu"], "to": ["eu"]}]}


def geo_config(
    urls: dict[str, str],
    database: Path,
    *,
    trusted: list[str] | None = None,
    routes: list[dict[str, Any]] | None = None,
    upstream: dict[str, Any] | None = None,
    **geo: Any,
) -> dict[str, Any]:
    """One pool per datacenter (``urls``: datacenter -> backend URL), a geo route ``/api``."""
    return {
        "listener": {"host": "127.0.0.1", "port": 8080, "shutdown_grace": 1},
        "trusted_proxies": ["127.0.0.1/32"] if trusted is None else trusted,
        "upstreams": {
            name: {"endpoints": [{"url": url}], **(upstream or {})} for name, url in urls.items()
        },
        "geo": geo_section(database, **geo),
        "routes": routes or [{"name": "geo", "path_prefix": "/api", "geo": True}],
    }


@pytest.fixture
async def datacenters() -> AsyncIterator[dict[str, MockBackend]]:
    """One in-process backend per datacenter, named like it."""
    started = await run_backends(len(DATACENTERS))
    try:
        yield dict(zip(DATACENTERS, started, strict=True))
    finally:
        for backend in started:
            await backend.stop()


@pytest.fixture
def processes() -> Iterator[dict[str, BackendProcess]]:
    """One backend process per datacenter (the tests kill and restart them)."""
    started = {name: BackendProcess(name) for name in DATACENTERS}
    try:
        for process in started.values():
            process.start()
        yield started
    finally:
        for process in started.values():
            process.kill()


def _urls(backends: dict[str, Any]) -> dict[str, str]:
    return {name: backend.url for name, backend in backends.items()}


async def _get(client: httpx.AsyncClient, client_ip: str, path: str = "/api/x") -> httpx.Response:
    return await client.get(path, headers={"X-Forwarded-For": client_ip})


def _served_by(response: httpx.Response) -> str:
    return response.headers.get("x-datacenter", "")


async def test_each_client_is_served_by_its_nearest_datacenter(
    datacenters: dict[str, MockBackend], tmp_path: Path
) -> None:
    """London, Seattle and Tokyo (IPv6) reach eu-west, us-east and ap-south: the backend that
    answers is that datacenter's, the answer names it and its region, the upstream got the
    client's region (a forged one replaced), and /metrics labels the route by the pool used."""
    data = geo_config(_urls(datacenters), write_mmdb(tmp_path / "geo.mmdb"))
    async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        seen = {}
        for address, name in ((LONDON, "eu-west"), (SEATTLE, "us-east"), (TOKYO, "ap-south")):
            response = await client.get(
                "/api/x", headers={"X-Forwarded-For": address, "X-Client-Region": "mars"}
            )
            assert response.status_code == 200
            seen[name] = response
        metrics = (await client.get("/metrics")).text
    for name, response in seen.items():
        region = DATACENTERS[name][0]
        assert response.json()["backend"] == datacenters[name].name
        assert response.headers["x-datacenter"] == name
        assert response.headers["x-datacenter-region"] == region
        assert response.json()["headers"]["x-client-region"] == region
    assert 'gatekeeper_http_requests_total{route="geo",status="200",upstream="eu-west"} 1.0' in (
        metrics
    )
    assert (
        'gatekeeper_geo_requests_total{datacenter="ap-south",region="ap",route="geo"} 1.0'
        in metrics
    )


async def test_an_untrusted_client_cannot_choose_its_region(
    datacenters: dict[str, MockBackend], tmp_path: Path
) -> None:
    """Without trusted proxies a London X-Forwarded-For is ignored (loopback: the default
    region, us-east); with loopback trusted, hops a client prepends are not believed either:
    the last untrusted hop (Seattle) decides, not the London one written before it."""
    database = write_mmdb(tmp_path / "geo.mmdb")
    untrusted = geo_config(_urls(datacenters), database, trusted=[])
    async with running_gateway(untrusted) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await _get(client, LONDON)
        assert _served_by(response) == "us-east"
        assert response.json()["headers"]["x-client-region"] == "us"
    trusted = geo_config(_urls(datacenters), database)
    async with running_gateway(trusted) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        assert _served_by(await _get(client, f"{LONDON}, {SEATTLE}")) == "us-east"
        assert _served_by(await _get(client, f"{SEATTLE}, {LONDON}")) == "eu-west"


def _healthy(gw: Gateway, datacenter: str) -> bool:
    snapshot = gw.runtime.snapshot
    assert snapshot is not None
    return all(endpoint.healthy for endpoint in snapshot.pools[datacenter].endpoints)


async def test_failover_on_health_checks_residency_refusal_and_return(
    processes: dict[str, BackendProcess], tmp_path: Path
) -> None:
    """eu-west's backend dies: once its checks mark it down, London goes to us-east on a free
    route and gets a 503 residency problem on a route keeping EU clients in the EU (Seattle
    unaffected); the backend comes back: once its checks pass, London is served by eu-west
    again on both."""
    routes = [
        {"name": "free", "path_prefix": "/api", "geo": True},
        {"name": "eu-only", "path_prefix": "/eu", "geo": EU_STAYS},
    ]
    data = geo_config(
        _urls(processes), write_mmdb(tmp_path / "geo.mmdb"),
        routes=routes, upstream={"health": FAST_CHECKS},
    )  # fmt: skip
    async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        assert _served_by(await _get(client, LONDON)) == "eu-west"
        assert _served_by(await _get(client, LONDON, "/eu/x")) == "eu-west"

        processes["eu-west"].kill()
        await eventually(lambda: not _healthy(gw, "eu-west"), what="eu-west's checks failing")
        moved = await _get(client, LONDON)
        assert moved.status_code == 200
        assert _served_by(moved) == "us-east"  # Ashburn is nearer to London than Mumbai
        refused = await _get(client, LONDON, "/eu/x")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["error"] == "residency_unavailable"
        assert problem["region"] == "eu"
        assert problem["datacenters"] == ["eu-west"]
        assert "x-datacenter" not in refused.headers
        assert _served_by(await _get(client, SEATTLE, "/eu/x")) == "us-east"
        during = (await client.get("/geo/stats")).json()
        assert during["failovers_by_datacenter"] == {"us-east": 1}
        assert during["refused"] == {"residency": 1}
        assert [dc["available"] for dc in during["datacenters"]] == [True, False, True]

        processes["eu-west"].start()  # same port
        await eventually(lambda: _healthy(gw, "eu-west"), what="eu-west's checks passing")
        assert _served_by(await _get(client, LONDON)) == "eu-west"
        assert _served_by(await _get(client, LONDON, "/eu/x")) == "eu-west"


async def test_a_datacenter_whose_breaker_tripped_returns_when_its_checks_pass(
    processes: dict[str, BackendProcess], tmp_path: Path
) -> None:
    """London's requests during the outage trip eu-west's breaker (one failure suffices here,
    and it stays open 60 s); the backend back, London returns to eu-west as soon as the checks
    pass, not a minute later."""
    breaker = {"consecutive_failures": 1, "open_for": 60}
    # Checks slow enough (two failures 0.3 s apart) that London's request reaches the dead
    # backend first.
    checks = {"interval": 0.3, "timeout": 0.5, "healthy_threshold": 1, "unhealthy_threshold": 2}
    data = geo_config(
        _urls(processes), write_mmdb(tmp_path / "geo.mmdb"),
        upstream={"health": checks, "breaker": breaker},
    )  # fmt: skip
    async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        processes["eu-west"].kill()
        failed = await _get(client, LONDON)  # sent before the checks notice: trips the breaker
        assert failed.status_code == 502
        snapshot = gw.runtime.snapshot
        assert snapshot is not None
        assert str(snapshot.pools["eu-west"].endpoints[0].breaker.state) == "open"
        assert _served_by(await _get(client, LONDON)) == "us-east"
        await eventually(lambda: not _healthy(gw, "eu-west"), what="eu-west's checks failing")

        processes["eu-west"].start()
        await eventually(lambda: _healthy(gw, "eu-west"), what="eu-west's checks passing")
        back = await _get(client, LONDON)
        assert back.status_code == 200
        assert _served_by(back) == "eu-west"


async def test_a_datacenter_pool_admission_limit_applies_to_geo_requests(
    datacenters: dict[str, MockBackend], tmp_path: Path
) -> None:
    """eu-west admits one request at a time with no queue: of two concurrent slow London
    requests one is refused (503 queue_full) while Seattle's, sent meanwhile, goes through
    (us-east has no limit)."""
    data = geo_config(_urls(datacenters), write_mmdb(tmp_path / "geo.mmdb"))
    data["upstreams"]["eu-west"]["max_concurrency"] = 1
    data["upstreams"]["eu-west"]["queue"] = {"size": 0}
    async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        answers = await asyncio.gather(
            _get(client, LONDON, "/api/delay/400"),
            _get(client, LONDON, "/api/delay/400"),
            _get(client, SEATTLE, "/api/delay/400"),
        )
    london = sorted(r.status_code for r in answers[:2])
    assert london == [200, 503]
    refused = next(r for r in answers[:2] if r.status_code == 503)
    assert refused.json()["error"] == "queue_full"
    assert answers[2].status_code == 200
    assert _served_by(answers[2]) == "us-east"


async def test_a_replaced_database_file_is_picked_up_without_a_reload(
    datacenters: dict[str, MockBackend], tmp_path: Path
) -> None:
    """The file is renamed over by one that puts London's range in the US: within the watch
    interval London is served by us-east, and /geo/stats counts the reload."""
    database = write_mmdb(tmp_path / "geo.mmdb")
    data = geo_config(_urls(datacenters), database, watch_interval=0.05)
    async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        assert _served_by(await _get(client, LONDON)) == "eu-west"
        write_mmdb(database, cities={"81.2.69.0/24": ("US", "NA", 40.71, -74.0)}, countries={})

        async def moved() -> bool:
            return _served_by(await _get(client, LONDON)) == "us-east"

        await eventually(moved, what="the new database in use")
        stats = (await client.get("/geo/stats")).json()
    assert stats["database"]["reloads"] == 1
    assert stats["database"]["last_error"] is None


async def test_reload_reopens_the_database_keeps_the_counts_and_refuses_a_corrupt_file(
    datacenters: dict[str, MockBackend], tmp_path: Path
) -> None:
    """With watching off, a replaced file serves only after POST /admin/reload (SIGHUP's
    path), and the counters go on; a corrupt file is refused (422 naming it) and the
    database in use keeps serving."""
    database = write_mmdb(tmp_path / "geo.mmdb")
    data = geo_config(_urls(datacenters), database, watch_interval=0)
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(json.dumps(data))
    async with (
        running_gateway(data, config_path=str(path)) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        assert _served_by(await _get(client, LONDON)) == "eu-west"
        write_mmdb(database, cities={"81.2.69.0/24": ("US", "NA", 40.71, -74.0)}, countries={})
        assert _served_by(await _get(client, LONDON)) == "eu-west"  # not watched
        assert (await client.post("/admin/reload", headers=AUTH)).status_code == 200
        assert _served_by(await _get(client, LONDON)) == "us-east"
        assert (await client.get("/geo/stats")).json()["requests"] == 3

        database.write_bytes(b"not a MaxMind database" * 50)
        refused = await client.post("/admin/reload", headers=AUTH)
        assert refused.status_code == 422
        assert any(
            f"geo.database: {str(database)!r} is not a MaxMind DB file" in problem["problem"]
            for problem in refused.json()["problems"]
        ), refused.json()
        assert _served_by(await _get(client, LONDON)) == "us-east"


async def test_a_missing_or_corrupt_database_stops_the_start_naming_the_file(
    tmp_path: Path,
) -> None:
    """Gateway.start refuses both with a ConfigurationError naming geo.database and the path."""
    urls = dict.fromkeys(DATACENTERS, "http://127.0.0.1:9")
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"\x00" * 4096)
    for database, says in (
        (tmp_path / "missing.mmdb", "does not exist"),
        (corrupt, "is not a MaxMind DB file"),
    ):
        config = parse_config(geo_config(urls, database))
        gateway = Gateway(Settings(redis_url=""), config, port=0, components=())
        with pytest.raises(ConfigurationError) as refused:
            await gateway.start()
        assert f"geo.database: {str(database)!r} {says}" in str(refused.value)


async def test_geo_stats_is_404_without_a_geo_section() -> None:
    """/geo/stats says geographic routing is not configured rather than showing zeros."""
    data = {"upstreams": {"u": {"endpoints": ["http://127.0.0.1:9"]}}, "routes": []}
    async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/geo/stats")
    assert response.status_code == 404
    assert "not configured" in response.json()["detail"]


@asynccontextmanager
async def _replica(
    tmp_path: Path, data: dict[str, Any]
) -> AsyncIterator[tuple[subprocess.Popen[bytes], int]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")},
        "GATEKEEPER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}",
        "GATEKEEPER_AUTO_MIGRATE": "true",
        "GATEKEEPER_LOG_LEVEL": "warning",
    }
    process, port = await asyncio.to_thread(launch_replica, tmp_path, env, "geo", data)
    try:
        yield process, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
async def test_gatekeeper_serve_reloads_the_database_on_sighup(
    datacenters: dict[str, MockBackend], tmp_path: Path
) -> None:
    """``gatekeeper serve`` as users run it: a replaced database serves after SIGHUP."""
    database = write_mmdb(tmp_path / "geo.mmdb")
    data = geo_config(_urls(datacenters), database, watch_interval=0)
    async with (
        _replica(tmp_path, data) as (process, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        assert _served_by(await _get(client, LONDON)) == "eu-west"
        write_mmdb(database, cities={"81.2.69.0/24": ("US", "NA", 40.71, -74.0)}, countries={})
        process.send_signal(signal.SIGHUP)

        async def moved() -> bool:
            return _served_by(await _get(client, LONDON)) == "us-east"

        await eventually(moved, within=10, what="the database reloaded on SIGHUP")
