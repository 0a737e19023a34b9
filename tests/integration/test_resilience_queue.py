"""The admission queue through the real gateway: 503 + Retry-After, timeouts, priority order."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.integration.test_resilience_upstreams import (
    Gateway,
    eventually,
    gateway_config,
    running_gateway,
    start_upstreams,
)


async def _queued(gateway: Gateway, n: int) -> None:
    await eventually(
        lambda: gateway.pool().snapshot()["admission"]["queued"] == n, what=f"{n} queued"
    )


async def test_full_queue_and_queue_timeout_answer_503(tmp_path: Path) -> None:
    """At the limit, one request waits; the next finds the queue full; the waiter times out."""
    (slow,) = await start_upstreams("slow")
    slow.gate = asyncio.Event()
    try:
        config = gateway_config(
            [slow.url],
            upstream={"max_concurrency": 1, "queue": {"size": 1, "timeout": 0.3}},
            route={"retry": {"attempts": 1}},
        )
        async with running_gateway(config, tmp_path) as gateway:
            holder = asyncio.create_task(gateway.client().get("/api/hold"))
            await eventually(
                lambda: gateway.pool().snapshot()["admission"]["active"] == 1, what="slot taken"
            )
            waiter = asyncio.create_task(gateway.client().get("/api/wait"))
            await _queued(gateway, 1)
            status, headers, body = await gateway.client().get("/api/rejected")
            assert status == 503
            assert headers["retry-after"] == "1"
            assert json.loads(body)["error"] == "queue_full"

            status, headers, body = await waiter
            assert status == 503
            assert "waited" in json.loads(body)["detail"]
            assert headers["retry-after"] == "1"
            slow.gate.set()
            assert (await holder)[0] == 200
            admission = gateway.pool().snapshot()["admission"]
            assert admission["rejected_full"] == 1
            assert admission["timed_out"] == 1
            assert admission["active"] == 0
            assert admission["queued"] == 0
        assert slow.paths == ["/api/hold"]
    finally:
        await slow.stop()


async def test_higher_priority_routes_go_first(tmp_path: Path) -> None:
    """Queued requests reach the backend by route priority, FIFO within a priority."""
    (upstream,) = await start_upstreams("one")
    upstream.gate = asyncio.Event()
    try:
        config = gateway_config(
            [upstream.url],
            upstream={"max_concurrency": 1, "queue": {"size": 10, "timeout": 10}},
            extra_routes=[
                {"name": "vip", "path_prefix": "/api/vip", "upstream": "backends", "priority": 10}
            ],
        )
        async with running_gateway(config, tmp_path) as gateway:
            tasks = [asyncio.create_task(gateway.client().get("/api/hold"))]
            await eventually(
                lambda: gateway.pool().snapshot()["admission"]["active"] == 1, what="slot taken"
            )
            for i, path in enumerate(["/api/low1", "/api/low2", "/api/vip/1", "/api/low3"]):
                tasks.append(asyncio.create_task(gateway.client().get(path)))
                await _queued(gateway, i + 1)
            upstream.gate.set()
            results = await asyncio.gather(*tasks)
        assert [r[0] for r in results] == [200] * 5
        assert upstream.paths == ["/api/hold", "/api/vip/1", "/api/low1", "/api/low2", "/api/low3"]
    finally:
        await upstream.stop()
