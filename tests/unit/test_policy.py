"""Policies and rate strings: valid input parses, bad input names its problem."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.decision import Decision, PolicyResult
from gatekeeper.limits.policy import Algorithm, Check, Policy, Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("10/second", 10, 1),
        ("5/10s", 5, 10),
        ("1000 per hour", 1000, 3600),
        ("100/min", 100, 60),
        ("7/2.5 minutes", 7, 150),
        ("3/DAY", 3, 86400),
    ],
)
def test_parse_rate_accepts_common_forms(text: str, limit: int, period: float) -> None:
    """Every documented spelling of a rate parses to limit and period seconds."""
    assert parse_rate(text) == Rate(limit, period)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("5/fortnight", "unknown period 'fortnight'"),
        ("0/second", "at least 1"),
        ("ten/second", "malformed"),
        ("5/0s", "longer than zero"),
        ("", "malformed"),
    ],
)
def test_parse_rate_rejects_bad_strings_naming_the_problem(text: str, fragment: str) -> None:
    """A bad rate string raises ConfigurationError whose message says what is wrong."""
    with pytest.raises(ConfigurationError, match=fragment):
        parse_rate(text)


def test_policy_rejects_unknown_algorithm() -> None:
    """An unknown algorithm name is a configuration error listing the known ones."""
    with pytest.raises(ConfigurationError, match="unknown algorithm 'leaky'"):
        Policy("p", Rate(1, 1), algorithm="leaky")  # type: ignore[arg-type]


def test_policy_rejects_zero_rate_and_negative_cost() -> None:
    """A rate of zero and a negative cost are refused."""
    with pytest.raises(ConfigurationError):
        Rate(0, 1)
    with pytest.raises(ConfigurationError, match="cost"):
        Check(Policy("p", Rate(1, 1)), "ip:1", cost=-1)


def test_policy_accepts_strings_for_enums_and_rates() -> None:
    """Configuration files give strings; the policy converts them."""
    policy = Policy("p", "5/10s", algorithm="gcra", burst=8)  # type: ignore[arg-type]
    assert policy.algorithm is Algorithm.GCRA
    assert policy.capacity == 8
    assert policy.rate == Rate(5, 10)


def test_storage_key_hash_tags_the_subject() -> None:
    """All keys of one subject share a Cluster hash tag; braces in the subject cannot break it."""
    check = Check(Policy("per-ip", Rate(1, 1)), "ip:{evil}")
    assert check.storage_key == "gk:{ip:(evil)}:per-ip"


def test_decision_retry_after_rounds_up() -> None:
    """Retry-After is rounded up so that a client waiting it out is admitted."""
    denied = PolicyResult("p", False, 10, 0, reset_after=2.2, retry_after=0.1)
    decision = Decision(False, (denied,))
    assert decision.retry_after == 1
    assert decision.reset_after == 3
    assert Decision(True, ()).retry_after == 0
