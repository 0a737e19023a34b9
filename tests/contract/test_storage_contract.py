"""The Storage contract: every assertion here holds on memory, Redis and Redis Cluster."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.decision import PolicyResult
from gatekeeper.limits.policy import Algorithm, Check, Policy
from gatekeeper.types import Storage

NOW = 1_700_000_000_000_000  # microseconds, aligned to every period used below
SECOND = 1_000_000


def states(results: list[PolicyResult]) -> list[tuple[bool, int]]:
    return [(r.allowed, r.remaining) for r in results]


async def test_token_bucket_admits_capacity_then_denies_with_exact_retry(storage: Storage) -> None:
    """A 3/second bucket admits 3, denies the 4th, and says when a token is back (1/3 s)."""
    policy = Policy("tb", "3/second")
    outcomes = [(await storage.decide([[Check(policy, "a")]], NOW))[0][0] for _ in range(4)]
    assert [r.allowed for r in outcomes] == [True, True, True, False]
    assert [r.remaining for r in outcomes] == [2, 1, 0, 0]
    assert outcomes[3].retry_after == pytest.approx(0.333334, abs=1e-9)
    assert outcomes[3].reset_after == pytest.approx(1.0, abs=1e-9)
    later = await storage.decide([[Check(policy, "a")]], NOW + 333_334)
    assert later[0][0].allowed


async def test_group_is_all_or_nothing_across_policies(storage: Storage) -> None:
    """When 2/second denies, the 5/minute policy of the same group is not debited."""
    fast, slow = Policy("per-second", "2/second"), Policy("per-minute", "5/minute")
    group = [Check(fast, "ip:1"), Check(slow, "ip:1")]
    for _ in range(2):
        assert all(r.allowed for r in (await storage.decide([group], NOW))[0])
    denied = (await storage.decide([group], NOW))[0]
    assert states(denied) == [(False, 0), (True, 3)]
    # Three more denials later, the per-minute policy still has 3 left.
    for _ in range(3):
        await storage.decide([group], NOW + 1)
    after = (await storage.decide([[Check(slow, "ip:1", peek=True)]], NOW + 2))[0][0]
    assert after.remaining == 3


async def test_group_spanning_subjects_is_all_or_nothing(storage: Storage) -> None:
    """Per-IP and per-key checks of one request: a denial by the key refunds/keeps the IP."""
    per_ip, per_key = Policy("ip", "5/minute"), Policy("key", "1/minute", algorithm="sliding_log")
    group = [Check(per_ip, "ip:203.0.113.7"), Check(per_key, "key:ab12")]
    assert states((await storage.decide([group], NOW))[0]) == [(True, 4), (True, 0)]
    assert states((await storage.decide([group], NOW))[0]) == [(True, 4), (False, 0)]
    peek = (await storage.decide([[Check(per_ip, "ip:203.0.113.7", peek=True)]], NOW))[0][0]
    assert peek.remaining == 4


async def test_groups_of_one_batch_apply_in_order(storage: Storage) -> None:
    """Three groups on one key with a limit of 2: the first two pass, the third is denied."""
    policy = Policy("fw", "2/second", algorithm="fixed_window")
    batch = [[Check(policy, "k")] for _ in range(3)]
    results = await storage.decide(batch, NOW)
    assert [g[0].allowed for g in results] == [True, True, False]
    assert [g[0].remaining for g in results] == [1, 0, 0]


async def test_groups_of_one_batch_are_independent(storage: Storage) -> None:
    """A denied group of a batch leaves the other groups' debits in place."""
    a, b = Policy("a", "1/second"), Policy("b", "1/second")
    results = await storage.decide([[Check(a, "x")], [Check(a, "x"), Check(b, "x")]], NOW)
    assert states(results[0]) == [(True, 0)]
    assert states(results[1]) == [(False, 0), (True, 1)]
    assert (await storage.decide([[Check(b, "x")]], NOW))[0][0].allowed


async def test_shadow_policy_reports_but_never_denies(storage: Storage) -> None:
    """A shadow policy over its limit is reported (shadow=True, allowed=False) but the group
    passes and the enforced policy is debited."""
    enforced = Policy("enforced", "10/second")
    shadow = Policy("shadow", "1/second", shadow=True)
    group = [Check(enforced, "s"), Check(shadow, "s")]
    first = (await storage.decide([group], NOW))[0]
    second = (await storage.decide([group], NOW))[0]
    assert states(first) == [(True, 9), (True, 0)]
    assert states(second) == [(True, 8), (False, 0)]
    assert second[1].shadow
    assert not second[0].shadow
    assert second[1].retry_after > 0


async def test_shadow_policy_is_not_debited_when_the_group_is_denied(storage: Storage) -> None:
    """An enforced denial means no debit at all, the shadow policy's included."""
    enforced = Policy("enforced", "1/second")
    shadow = Policy("shadow", "5/second", shadow=True)
    await storage.decide([[Check(enforced, "s")]], NOW)
    denied = (await storage.decide([[Check(enforced, "s"), Check(shadow, "s")]], NOW))[0]
    assert states(denied) == [(False, 0), (True, 5)]


async def test_peek_decides_without_debiting(storage: Storage) -> None:
    """Peeks answer what a hit would get but leave the state as it is."""
    policy = Policy("peek", "2/second", algorithm="sliding_window")
    for _ in range(5):
        result = (await storage.decide([[Check(policy, "p", peek=True)]], NOW))[0][0]
        assert (result.allowed, result.remaining) == (True, 2)
    await storage.decide([[Check(policy, "p", cost=2)]], NOW)
    result = (await storage.decide([[Check(policy, "p", peek=True)]], NOW))[0][0]
    assert (result.allowed, result.remaining) == (False, 0)


async def test_cost_weighs_hits_and_zero_is_free(storage: Storage) -> None:
    """Cost 3 takes 3 of 5; cost 0 always passes and takes nothing; cost 3 again is denied."""
    policy = Policy("cost", "5/minute", algorithm="gcra")
    assert states((await storage.decide([[Check(policy, "c", cost=3)]], NOW))[0]) == [(True, 2)]
    assert states((await storage.decide([[Check(policy, "c", cost=0)]], NOW))[0]) == [(True, 2)]
    assert states((await storage.decide([[Check(policy, "c", cost=3)]], NOW))[0]) == [(False, 2)]
    assert states((await storage.decide([[Check(policy, "c", cost=2)]], NOW))[0]) == [(True, 0)]


@pytest.mark.parametrize("algorithm", list(Algorithm))
async def test_cost_above_capacity_is_never_admitted(storage: Storage, algorithm: str) -> None:
    """A cost larger than the limit is denied even on a fresh key; retry_after = reset_after."""
    policy = Policy("big", "3/second", algorithm=algorithm)
    result = (await storage.decide([[Check(policy, "b", cost=4, lease_id="l")]], NOW))[0][0]
    assert not result.allowed
    assert result.retry_after == result.reset_after


async def test_concurrency_leases_are_taken_released_and_expire(storage: Storage) -> None:
    """Two slots: a third lease waits for the earliest expiry; release frees a slot at once."""
    policy = Policy("conc", "2/second", algorithm="concurrency", lease_ttl=10)
    take = [Check(policy, "svc", lease_id=f"lease-{i}") for i in range(3)]
    assert (await storage.decide([[take[0]]], NOW))[0][0].allowed
    assert (await storage.decide([[take[1]]], NOW + SECOND))[0][0].allowed
    third = (await storage.decide([[take[2]]], NOW + 2 * SECOND))[0][0]
    assert not third.allowed
    assert third.retry_after == pytest.approx(8.0)
    await storage.release([take[0]], "lease-0")
    assert (await storage.decide([[take[2]]], NOW + 2 * SECOND))[0][0].allowed
    # lease-1 expires at NOW + 11 s; lease-2 at NOW + 12 s.
    fourth = Check(policy, "svc", lease_id="lease-3")
    assert not (await storage.decide([[fourth]], NOW + 11 * SECOND - 1))[0][0].allowed
    assert (await storage.decide([[fourth]], NOW + 11 * SECOND))[0][0].allowed


async def test_concurrency_check_without_lease_id_is_rejected(storage: Storage) -> None:
    """A concurrency check with no lease id is a configuration error, not a decision."""
    policy = Policy("conc", "2/second", algorithm="concurrency")
    with pytest.raises(ConfigurationError, match="lease_id"):
        await storage.decide([[Check(policy, "svc")]], NOW)


async def test_same_policy_and_subject_twice_in_a_group_is_rejected(storage: Storage) -> None:
    """A group may not debit one key twice: its all-or-nothing meaning would be ambiguous."""
    policy = Policy("dup", "2/second")
    with pytest.raises(ConfigurationError, match="twice"):
        await storage.decide([[Check(policy, "k"), Check(policy, "k")]], NOW)


async def test_reset_forgets_the_state(storage: Storage) -> None:
    """After reset, an exhausted key is full again."""
    policy = Policy("reset", "1/minute", algorithm="sliding_log")
    check = Check(policy, "r")
    await storage.decide([[check]], NOW)
    assert not (await storage.decide([[check]], NOW))[0][0].allowed
    await storage.reset([check])
    assert (await storage.decide([[check]], NOW))[0][0].allowed


async def test_ping_answers(storage: Storage) -> None:
    """A reachable store answers ping without raising."""
    await storage.ping()


async def test_store_clock_decides_when_no_time_is_given(storage: Storage) -> None:
    """Without now_us the store's own clock is used: a 1/hour key is denied on the 2nd hit."""
    policy = Policy("clock", "1/hour")
    assert (await storage.decide([[Check(policy, "c")]]))[0][0].allowed
    second = (await storage.decide([[Check(policy, "c")]]))[0][0]
    assert not second.allowed
    assert 3590 < second.retry_after <= 3600


async def test_empty_batch_and_empty_group(storage: Storage) -> None:
    """An empty batch answers nothing; an empty group answers an empty list."""
    assert await storage.decide([], NOW) == []
    assert await storage.decide([[]], NOW) == [[]]


@pytest.mark.parametrize("algorithm", [a for a in Algorithm if a is not Algorithm.CONCURRENCY])
async def test_fractional_periods_are_exact_to_the_microsecond(
    storage: Storage, algorithm: str
) -> None:
    """7 per 2.5 s: the 8th hit is denied and admitted exactly retry_after later, not 1 us
    earlier (the time is integer microseconds end to end)."""
    policy = Policy("frac", "7/2.5s", algorithm=algorithm)
    start = NOW + 123_457
    for _ in range(7):
        assert (await storage.decide([[Check(policy, "f")]], start))[0][0].allowed
    denied = (await storage.decide([[Check(policy, "f")]], start))[0][0]
    assert not denied.allowed
    retry_us = round(denied.retry_after * 1_000_000)
    peek = Check(policy, "f", peek=True)
    assert not (await storage.decide([[peek]], start + retry_us - 1))[0][0].allowed
    assert (await storage.decide([[peek]], start + retry_us))[0][0].allowed
