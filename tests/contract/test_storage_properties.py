"""Property tests per algorithm, on every storage: generated sequences of (time step, cost,
peek) hits, with the time given as ``now_us``.

Two properties for each sequence:

1. What the store admits (debits of non-peek checks of admitted groups) never exceeds the
   algorithm's definition over any interval (the bounds are stated in
   ``tests/unit/test_algorithms.admitted_within_bound``).
2. The store gives exactly the memory store's answers, result by result (so the Lua scripts
   and the Python algorithms agree).

Each sequence also carries a second policy in some groups (enforced or shadow), and decides
runs of hits at one instant in one batch, so that the all-or-nothing, shadow and batching paths
are compared too.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatekeeper.limits.decision import PolicyResult
from gatekeeper.limits.policy import Algorithm, Check, Policy, Rate
from gatekeeper.limits.storage import MemoryStorage
from gatekeeper.types import Storage
from tests.contract.conftest import Opener, _drop_prefix
from tests.unit.test_algorithms import admitted_within_bound

START = 1_700_000_000_000_000
SECOND = 1_000_000

steps = st.sampled_from([0, 1, 999, 40_000, 250_000, 333_333, 1_000_000, 3_000_001]) | (
    st.integers(0, 3 * SECOND)
)
hit = st.tuples(
    steps,
    st.sampled_from([0, 1, 1, 1, 2, 3, 7]),
    st.sampled_from([False] * 6 + [True]),
    st.sampled_from(["none", "none", "enforced", "shadow"]),
    st.booleans(),  # decide in the same batch as the previous hit (when no time passed)
)


def _policy(algorithm: Algorithm, limit: int, period: float, burst: int | None) -> Policy:
    return Policy(
        f"prop-{algorithm.value}",
        Rate(limit, period),
        algorithm=algorithm,
        burst=burst if algorithm in (Algorithm.TOKEN_BUCKET, Algorithm.GCRA) else None,
        lease_ttl=period,
    )


async def _replay(
    store: Storage, policy: Policy, hits: list[tuple[int, int, bool, str, bool]], subject: str
) -> tuple[list[list[PolicyResult]], list[tuple[int, int]]]:
    """Replay the hits, several groups per ``decide`` call where the sequence says so."""
    other = Policy("other", "3/second", algorithm="fixed_window")
    other_shadow = Policy("other-shadow", "2/second", shadow=True)
    batches: list[tuple[int, list[tuple[list[Check], bool, int]]]] = []
    now = START
    for i, (dt, cost, peek, extra, join) in enumerate(hits):
        now += dt
        group = [Check(policy, subject, cost=cost, peek=peek, lease_id=f"lease-{i}")]
        if extra != "none":
            group.append(Check(other if extra == "enforced" else other_shadow, subject))
        if join and dt == 0 and batches:
            batches[-1][1].append((group, peek, cost))
        else:
            batches.append((now, [(group, peek, cost)]))
    answers: list[list[PolicyResult]] = []
    debits: list[tuple[int, int]] = []
    for at, batch in batches:
        decided = await store.decide([group for group, _, _ in batch], at)
        for results, (_, peek, cost) in zip(decided, batch, strict=True):
            answers.append(results)
            group_allowed = all(r.allowed or r.shadow for r in results)
            if group_allowed and results[0].allowed and not peek and cost:
                debits.append((at, cost))
    return answers, debits


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_store_admits_within_the_bound_and_agrees_with_memory(
    open_storage: Opener, backend: str, algorithm: Algorithm
) -> None:
    """Any hit sequence: admissions stay within the algorithm's bound on every interval, and
    every result equals the memory store's for the same sequence."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"

    @settings(
        max_examples={"memory": 60, "redis": 30}.get(backend, 20),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        limit=st.integers(1, 5),
        period=st.sampled_from([1.0, 0.25, 2.5]),
        burst=st.none() | st.integers(1, 7),
        hits=st.lists(hit, min_size=1, max_size=30),
    )
    def check(limit: int, period: float, burst: int | None, hits: list[Any]) -> None:
        policy = _policy(algorithm, limit, period, burst)
        subject = f"s-{uuid.uuid4().hex[:10]}"

        async def run() -> None:
            store = open_storage(prefix)
            try:
                answers, debits = await _replay(store, policy, hits, subject)
            finally:
                await store.aclose()
            assert admitted_within_bound(policy, debits)
            if backend != "memory":
                expected, _ = await _replay(MemoryStorage(), policy, hits, subject)
                assert answers == expected

        asyncio.run(run())

    try:
        check()
    finally:
        if backend == "redis":
            asyncio.run(_drop_prefix(prefix))
