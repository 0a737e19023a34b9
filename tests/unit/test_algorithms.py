"""The counting algorithms on their own: bounds, exact retry times, and known edge cases."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.limits import algorithms as alg
from gatekeeper.limits.policy import Algorithm, Policy, Rate

START = 1_700_000_000_000_000
SECOND = 1_000_000


def step(policy: Policy, state: Any, now: int, cost: int, lease: str = "l") -> alg.Outcome:
    """One decision of ``policy`` (the same dispatch as the stores)."""
    limit, period, capacity = policy.rate.limit, policy.rate.period_us, policy.capacity
    match policy.algorithm:
        case Algorithm.TOKEN_BUCKET:
            return alg.token_bucket(state, now, limit, period, capacity, cost)
        case Algorithm.GCRA:
            return alg.gcra(state, now, limit, period, capacity, cost)
        case Algorithm.FIXED_WINDOW:
            return alg.fixed_window(state, now, limit, period, cost)
        case Algorithm.SLIDING_WINDOW:
            return alg.sliding_window(state, now, limit, period, cost)
        case Algorithm.SLIDING_LOG:
            return alg.sliding_log(state, now, limit, period, cost)
        case _:
            return alg.concurrency(state, now, limit, round(policy.lease_ttl * SECOND), cost, lease)


def committed(new: Any) -> Any:
    return new.apply() if isinstance(new, alg.LogAppend) else new


def admitted_within_bound(policy: Policy, debits: list[tuple[int, int]]) -> bool:
    """Whether the admitted ``(time, cost)`` debits respect the algorithm's definition:

    - token bucket / GCRA: in any [a, b], admitted <= capacity + limit * (b - a) / period;
    - fixed and sliding window: in each aligned window, admitted <= limit;
    - sliding log: in any (t - period, t], admitted <= limit;
    - concurrency: at any t, slots taken in (t - ttl, t] (unreleased leases) <= limit.
    """
    limit, period, capacity = policy.rate.limit, policy.rate.period_us, policy.capacity
    algorithm = policy.algorithm
    if algorithm in (Algorithm.TOKEN_BUCKET, Algorithm.GCRA):
        for i, (a, _) in enumerate(debits):
            total = 0
            for b, cost in debits[i:]:
                total += cost
                if total * period > capacity * period + limit * (b - a):
                    return False
        return True
    if algorithm in (Algorithm.FIXED_WINDOW, Algorithm.SLIDING_WINDOW):
        windows: dict[int, int] = {}
        for t, cost in debits:
            windows[t // period] = windows.get(t // period, 0) + cost
        return all(v <= limit for v in windows.values())
    width = period if algorithm is Algorithm.SLIDING_LOG else round(policy.lease_ttl * SECOND)
    return all(sum(c for s, c in debits if t - width < s <= t) <= limit for t, _ in debits)


policies = st.builds(
    lambda algorithm, limit, period, burst, ttl: Policy(
        "p",
        Rate(limit, period),
        algorithm=algorithm,
        burst=burst if algorithm in (Algorithm.TOKEN_BUCKET, Algorithm.GCRA) else None,
        lease_ttl=ttl,
    ),
    st.sampled_from(list(Algorithm)),
    st.integers(1, 6),
    st.sampled_from([1.0, 0.25, 3.0, 0.7]),
    st.none() | st.integers(1, 9),
    st.sampled_from([0.5, 1.0, 2.0]),
)
hits = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 999, 50_000, 333_333, 1_000_000, 2_500_001])
        | st.integers(0, 4 * SECOND),
        st.integers(0, 8),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(policy=policies, sequence=hits, offset=st.integers(0, 3 * SECOND))
def test_admissions_respect_the_bound_and_retry_after_is_exact(
    policy: Policy, sequence: list[tuple[int, int]], offset: int
) -> None:
    """Over any sequence of hits, admitted totals stay within the algorithm's bound, and
    after each denial a retry of the same cost is admitted exactly retry_after later, not 1 us
    earlier (for costs that fit the capacity)."""
    state: Any = None
    now = START + offset
    debits: list[tuple[int, int]] = []
    for i, (dt, cost) in enumerate(sequence):
        now += dt
        lease = f"lease-{i}"
        allowed, remaining, reset, retry, new = step(policy, state, now, cost, lease)
        assert remaining >= 0
        assert reset >= 0
        if allowed:
            assert retry == 0
            if cost:
                debits.append((now, cost))
                state = committed(new)
            continue
        assert new is None
        if cost > policy.capacity:
            assert retry == reset
            continue
        assert retry > 0
        assert step(policy, copy.deepcopy(state), now + retry, cost, lease)[0]
        assert not step(policy, copy.deepcopy(state), now + retry - 1, cost, lease)[0]
    assert admitted_within_bound(policy, debits)


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 6),
    period=st.sampled_from([1.0, 0.3, 7.0]),
    burst=st.none() | st.integers(1, 9),
    sequence=hits,
)
def test_gcra_and_token_bucket_agree_decision_by_decision(
    limit: int, period: float, burst: int | None, sequence: list[tuple[int, int]]
) -> None:
    """GCRA is the token bucket stored as one timestamp: every outcome matches."""
    bucket = Policy("b", Rate(limit, period), burst=burst)
    cell = Policy("c", Rate(limit, period), algorithm="gcra", burst=burst)
    s1: Any = None
    s2: Any = None
    now = START
    for dt, cost in sequence:
        now += dt
        r1, r2 = step(bucket, s1, now, cost), step(cell, s2, now, cost)
        assert r1[:4] == r2[:4]
        if r1[4] is not None:
            s1, s2 = r1[4], r2[4]


def test_fixed_window_allows_twice_the_limit_across_a_boundary() -> None:
    """The fixed window's known weakness: limit at the end of one window and again at once."""
    policy = Policy("fw", "3/second", algorithm="fixed_window")
    state: Any = None
    end = START + SECOND - 1
    for now in (end, end, end, end + 1, end + 1, end + 1):
        allowed, *_, new = step(policy, state, now, 1)
        assert allowed
        state = new


def test_sliding_window_weights_the_previous_window() -> None:
    """With 4 hits in the previous window, 75% into the next one a hit counts 1 + 1 = 2."""
    policy = Policy("sw", "4/second", algorithm="sliding_window")
    state: Any = None
    for _ in range(4):
        state = step(policy, state, START, 1)[4]
    allowed, remaining, _, _, state = step(policy, state, START + SECOND + 750_000, 1)
    assert allowed
    assert remaining == 2  # 4 - (4 * 0.25 + 1)
    denied = step(policy, state, START + SECOND + 750_000, 3)
    assert not denied[0]
    # One microsecond later the previous window's share (4 * 0.249999) rounds down to 0.
    assert denied[3] == 1
    assert step(policy, state, START + SECOND + 750_001, 3)[0]


def test_sliding_window_kept_busy_admits_the_whole_limit_every_window() -> None:
    """A key hit every 10 ms for eight seconds gets exactly 5 a second from "5/second" (the
    unrounded estimate converged to 4: the last slot of a window never came free)."""
    policy = Policy("sw", "5/second", algorithm="sliding_window")
    state: Any = None
    admitted = [0] * 8
    for tick in range(800):
        allowed, *_, new = step(policy, state, START + tick * 10_000, 1)
        if allowed:
            admitted[tick // 100] += 1
            state = new
    assert admitted == [5] * 8


def test_sliding_log_counts_each_unit_of_cost_as_an_entry() -> None:
    """Cost 3 adds three entries; they leave the log together one period later."""
    policy = Policy("sl", "4/second", algorithm="sliding_log")
    allowed, remaining, reset, _, new = step(policy, None, START, 3)
    assert (allowed, remaining, reset) == (True, 1, SECOND)
    log = committed(new)
    assert log == [START] * 3
    assert step(policy, log, START + SECOND - 1, 2)[3] == 1
    assert step(policy, log, START + SECOND, 4)[0]


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_zero_cost_never_writes(algorithm: Algorithm) -> None:
    """A free look (cost 0) is admitted and asks the store to write nothing."""
    policy = Policy("z", "1/second", algorithm=algorithm)
    allowed, _, _, retry, new = step(policy, None, START, 0)
    assert allowed
    assert retry == 0
    assert new is None


def test_token_bucket_survives_a_clock_that_goes_back() -> None:
    """A time before the last update refills nothing and keeps the later stamp."""
    policy = Policy("tb", "2/second")
    state = step(policy, None, START, 2)[4]
    allowed, _, _, _, _ = step(policy, state, START - SECOND, 1)
    assert not allowed


def test_lease_members_name_one_member_per_unit_of_cost() -> None:
    """A lease of cost 3 holds three sorted-set members under its id."""
    assert alg.lease_members("x", 3) == ["x", "x#2", "x#3"]
