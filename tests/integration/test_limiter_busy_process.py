"""A busy process does not skip decisions: the limiter's deadline measures the store, not the
process's own backlog (issue 14: under a load that saturated the process, ~3,000 decisions were
skipped with a healthy Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.policy import Check, Policy
from gatekeeper.limits.storage import storage_from_url

pytestmark = pytest.mark.redis

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "uvloop": uvloop.run,
    "asyncio": asyncio.run,
}


@pytest.mark.parametrize("loop", list(LOOPS))
@pytest.mark.parametrize("url_form", ["lean", "redis-py"])
def test_answers_waiting_in_the_socket_are_taken_after_a_stall(
    redis_url: str, loop: str, url_form: str
) -> None:
    """Batches sent, then the event loop stalls for three deadlines (Redis has long answered):
    every decision is still the store's, none degraded, and the limiter stays healthy. Both the
    callback path (the lean client) and the task path (redis-py, e.g. rediss://) are covered."""
    prefix = f"busy-{uuid.uuid4().hex[:8]}"
    policy = Policy.parse("p", "1000/second", failure="open")

    async def scenario() -> None:
        storage: Any = storage_from_url(redis_url, prefix=prefix)
        if url_form == "redis-py":  # as a rediss:// store decides: redis-py, on a task
            storage.lean = None
        limiter = Limiter(storage, deadline=0.05)
        try:
            assert (await limiter.hit(policy, "warm")).allowed  # connection and script ready
            for round_ in range(10):
                pending = [
                    asyncio.ensure_future(limiter.decide([Check(policy, f"k{round_}:{i}", 1)]))
                    for i in range(32)
                ]
                for _ in range(3):  # the batch leaves (a task on the redis-py path)
                    await asyncio.sleep(0)
                time.sleep(0.15)  # noqa: ASYNC251 - the process busy on the loop's thread
                decisions = await asyncio.gather(*pending)
                assert [d.degraded for d in decisions] == [False] * 32
            assert limiter.stats.degraded == 0
            assert limiter.stats.state == "ok"
        finally:
            await limiter.aclose()
            await storage.aclose()

    LOOPS[loop](scenario())
