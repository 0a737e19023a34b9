"""The hot path's shortcuts build the same values as the public constructors."""

from __future__ import annotations

import dataclasses
import random

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.decision import PolicyResult, policy_result
from gatekeeper.limits.policy import Algorithm, Check, Policy
from gatekeeper.limits.storage._script import Encoder
from gatekeeper.limits.storage.memory import MemoryStorage
from gatekeeper.testing import FakeClock

POLICY = Policy.parse("hot", "10/second")


@pytest.mark.parametrize(("key", "cost"), [("ip:1", 1), ("k", 0), ("user:zoë", 7)])
def test_policy_check_equals_the_validated_constructor(key: str, cost: int) -> None:
    """Policy.check(key, cost) is Check(policy, key, cost), field by field."""
    fast = POLICY.check(key, cost)
    assert type(fast) is Check
    assert fast == Check(POLICY, key, cost)
    assert hash(fast) == hash(Check(POLICY, key, cost))
    assert (fast.peek, fast.lease_id) == (False, None)


@pytest.mark.parametrize(("key", "cost"), [("k", -1), ("k", True), ("k", 1.0), ("", 1)])
def test_policy_check_refuses_what_check_refuses(key: str, cost: object) -> None:
    """Bad costs and empty keys raise ConfigurationError on the fast path too."""
    with pytest.raises(ConfigurationError):
        POLICY.check(key, cost)  # type: ignore[arg-type]


def test_a_fast_check_stays_frozen() -> None:
    """A check built by Policy.check is as immutable as any other."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        POLICY.check("k").cost = 5  # type: ignore[misc]


def test_policy_result_builder_matches_the_constructor() -> None:
    """policy_result() gives an equal, equally hashed and printed, immutable PolicyResult."""
    built = policy_result("p", True, 10, 9, 1.5, 0.0, False)
    made = PolicyResult("p", True, 10, 9, reset_after=1.5, retry_after=0.0)
    assert type(built) is PolicyResult
    assert built == made
    assert hash(built) == hash(made)
    assert repr(built) == repr(made)
    assert (built.policy, built.allowed, built.limit, built.remaining) == ("p", True, 10, 9)
    assert (built.reset_after, built.retry_after, built.shadow) == (1.5, 0.0, False)
    with pytest.raises(AttributeError):
        built.remaining = 3  # type: ignore[misc]


def test_encoder_still_refuses_a_concurrency_check_without_lease() -> None:
    """A one-check group skips group validation, but never a missing concurrency lease."""
    policy = Policy.parse("slots", "2/second", algorithm="concurrency")
    with pytest.raises(ConfigurationError, match="lease_id"):
        Encoder("gk").encode([[Check(policy, "k")]], None)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_memory_decide_one_matches_decide_sync(algorithm: Algorithm) -> None:
    """decide_one gives the results decide_sync gives for one-check groups, step by step:
    hits, peeks, free looks, shadow policies and denials alike."""
    enforced = Policy.parse("one", "3/second", algorithm=algorithm)
    shadow = Policy.parse("two", "2/second", algorithm=algorithm, shadow=True)
    one, grouped = MemoryStorage(clock=FakeClock()), MemoryStorage(clock=FakeClock())
    rng = random.Random(5)
    now = 1_700_000_000_000_000
    for step in range(300):
        now += rng.choice((0, 1, 1_000, 150_000, 400_000))
        policy = rng.choice((enforced, shadow))
        check = Check(
            policy,
            rng.choice(("a", "b")),
            rng.choice((0, 1, 1, 2, 5)),
            peek=rng.random() < 0.2,
            lease_id=f"lease{step % 4}" if algorithm is Algorithm.CONCURRENCY else None,
        )
        assert one.decide_one(check, now) == grouped.decide_sync([[check]], now)[0][0], step
