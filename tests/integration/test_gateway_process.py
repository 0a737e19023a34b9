"""A real ``gatekeeper serve`` process: SIGHUP reload with requests in flight, bounded memory
while streaming 100 MB each way."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.gateway_fixtures import backends, config_for
from tests.integration.gateway_process import GatewayProcess

MB = 1024 * 1024


async def _wait_for(predicate: Any, attempts: int = 200) -> None:
    """Poll ``predicate`` (async) every 50 ms, bounded; no fixed sleep."""
    for _ in range(attempts):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_sighup_reload_keeps_in_flight_requests_and_refuses_a_bad_file(
    tmp_path: Path,
) -> None:
    """SIGHUP swaps in a new file while a slow request completes on the old one; a broken file
    is refused and the last good configuration keeps serving."""
    async with backends(2) as bs:
        gw = GatewayProcess(tmp_path, config_for([bs[0].url])).start()
        try:
            async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
                assert (await client.get("/api/x")).json()["backend"] == "backend-1"
                slow = asyncio.create_task(client.get("/api/delay/1500"))
                await _wait_for(lambda: _true(bs[0].requests >= 2))
                gw.write(config_for([bs[1].url]))
                gw.signal(signal.SIGHUP)

                async def switched() -> bool:
                    return (await client.get("/api/x")).json()["backend"] == "backend-2"

                await _wait_for(switched)
                in_flight = await slow
                broken = config_for([bs[0].url])
                broken["routes"][0]["upstream"] = "nowhere"
                gw.write(broken)
                gw.signal(signal.SIGHUP)
                await _wait_for(lambda: _true("reload refused" in gw.log.read_text()))
                after = (await client.get("/api/x")).json()["backend"]
        finally:
            gw.stop()
    assert in_flight.status_code == 200
    assert in_flight.json()["backend"] == "backend-1"
    assert after == "backend-2"
    assert "nowhere" in gw.log.read_text()


async def _true(value: bool) -> bool:
    return value


@pytest.mark.slow
async def test_100_mb_each_way_streams_with_bounded_memory(tmp_path: Path) -> None:
    """A 100 MB upload and a 100 MB download pass through the gateway while its resident
    memory grows by far less than the body (measured from /proc)."""
    async with backends(1) as bs:
        data = config_for([bs[0].url])
        data["routes"] = [{"path_prefix": "/", "upstream": "backends",
                           "timeouts": {"read": 30, "total": 120}}]  # fmt: skip
        gw = GatewayProcess(tmp_path, data).start()
        try:
            async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
                assert (await client.get("/x")).status_code == 200
                baseline = gw.rss_kib()

                async def upload() -> AsyncIterator[bytes]:
                    chunk = b"u" * (256 * 1024)
                    for _ in range(400):
                        yield chunk

                up = await client.post("/upload", content=upload())
                received = 0
                async with client.stream("GET", "/bytes/104857600") as down:
                    async for part in down.aiter_raw():
                        received += len(part)
                peak = gw.rss_kib("VmHWM")
        finally:
            gw.stop()
    assert up.status_code == 200
    assert up.json()["body_bytes"] == 100 * MB
    assert down.status_code == 200
    assert received == 100 * MB
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 32, f"gateway RSS grew by {growth_mib:.1f} MiB while streaming 100 MB"
