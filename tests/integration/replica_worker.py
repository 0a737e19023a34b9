"""One replica of tests/integration/test_replicas.py, in its own spawned process.

Kept apart from the test module so that each spawned interpreter imports only Gatekeeper, not
pytest and the test fixtures (which would cost seconds per process).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from gatekeeper.limits import Check, Limiter, Policy, storage_from_url

REPLICAS = 4
CALLERS = 16  # concurrent callers per replica
ATTEMPTS = 8  # hits per caller: 4 x 16 x 8 = 512 attempts per algorithm
LIMIT = 40
NOW_US = 1_700_000_030_500_000  # mid-window, so fixed and sliding windows are not at an edge
ALGORITHMS = ["token_bucket", "gcra", "fixed_window", "sliding_window", "sliding_log",
              "concurrency"]  # fmt: skip


async def _replica(url: str, prefix: str, barrier: Any, out: Any, index: int) -> None:
    limiter = Limiter(storage_from_url(url, prefix=prefix), deadline=10.0)
    loop = asyncio.get_running_loop()
    try:
        await limiter.storage.ping()
        for algorithm in ALGORITHMS:
            policy = Policy.parse(f"replicas-{algorithm}", f"{LIMIT}/minute", algorithm=algorithm)
            await loop.run_in_executor(None, barrier.wait, 60)

            async def caller(policy: Policy = policy) -> tuple[int, int]:
                admitted = degraded = 0
                for _ in range(ATTEMPTS):
                    # Concurrency leases are taken and never released: slots stay held.
                    lease = uuid.uuid4().hex if policy.algorithm == "concurrency" else None
                    decision = await limiter.decide(
                        [Check(policy, "one-key", lease_id=lease)], now_us=NOW_US
                    )
                    admitted += decision.allowed
                    degraded += decision.degraded
                return admitted, degraded

            counts = await asyncio.gather(*(caller() for _ in range(CALLERS)))
            out.put(
                (
                    index,
                    algorithm,
                    sum(a for a, _ in counts),
                    sum(d for _, d in counts),
                    limiter.stats.mean_batch,
                )
            )
    finally:
        await limiter.aclose()


def replica_main(url: str, prefix: str, barrier: Any, out: Any, index: int) -> None:
    """Entry point of one replica process (spawned: a fresh interpreter, nothing inherited)."""
    asyncio.run(_replica(url, prefix, barrier, out, index))
