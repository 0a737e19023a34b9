"""The envoy: section: validation (every problem named) and descriptor matching as
envoyproxy/ratelimit matches."""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper.envoy.descriptors import compile_limits
from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.config import parse_config
from gatekeeper.limits.policy import Algorithm


def section(*descriptors: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"envoy": {"domains": [{"domain": "edge", "descriptors": list(descriptors)}], **extra}}


LIMIT = {"unit": "second", "requests_per_unit": 5}


def test_a_tree_compiles_to_policies_named_like_envoyproxy_ratelimit() -> None:
    """Rates, units (any case), algorithms and derived names."""
    config = parse_config(
        section(
            {"key": "remote_address", "rate_limit": {"unit": "MINUTE", "requests_per_unit": 60}},
            {
                "key": "header_match",
                "value": "api",
                "descriptors": [
                    {"key": "api_key", "rate_limit": LIMIT, "algorithm": "gcra", "burst": 9}
                ],
            },
        )
    )
    limits = compile_limits(config.envoy)
    by_name = limits.policies
    assert set(by_name) == {"edge.remote_address", "edge.header_match_api.api_key"}
    address = by_name["edge.remote_address"]
    assert (address.rate.limit, address.rate.period) == (60, 60.0)
    assert address.algorithm is Algorithm.FIXED_WINDOW
    nested = by_name["edge.header_match_api.api_key"]
    assert nested.algorithm is Algorithm.GCRA
    assert nested.capacity == 9


def test_matching_walks_the_tree() -> None:
    """The last entry must land on a limit; values are exact, a key alone matches any value."""
    config = parse_config(
        section(
            {"key": "remote_address", "rate_limit": LIMIT},
            {"key": "generic_key", "value": "a", "rate_limit": LIMIT, "name": "a"},
            {"key": "generic_key", "value": "free", "unlimited": True},
            {
                "key": "header_match",
                "value": "api",
                "descriptors": [{"key": "api_key", "rate_limit": LIMIT, "name": "per-key"}],
            },
        )
    )
    domain = compile_limits(config.envoy).domains["edge"]
    limit, subject = domain.match([("remote_address", "10.0.0.1")])
    assert limit is not None
    assert limit.policy is not None
    assert subject == "edge|remote_address=10.0.0.1"
    assert domain.match([("generic_key", "a")])[0].policy.name == "a"  # type: ignore[union-attr]
    assert domain.match([("generic_key", "b")])[0] is None
    free = domain.match([("generic_key", "free")])[0]
    assert free is not None
    assert free.policy is None
    nested, subject = domain.match([("header_match", "api"), ("api_key", "k1")])
    assert nested is not None
    assert nested.policy is not None
    assert nested.policy.name == "per-key"
    assert subject == "edge|header_match=api|api_key=k1"
    assert domain.match([("header_match", "api")])[0] is None  # no limit of its own
    assert domain.match([("remote_address", "1"), ("more", "x")])[0] is None  # past a leaf


@pytest.mark.parametrize(
    ("descriptor", "problem"),
    [
        ({"key": "k", "rate_limit": LIMIT, "algorithm": "concurrency"}, "never says when"),
        ({"key": "k", "rate_limit": LIMIT, "unlimited": True}, "not both"),
        ({"key": "k", "rate_limit": LIMIT, "burst": 3}, "burst applies"),
        ({"key": "k", "rate_limit": {"unit": "fortnight", "requests_per_unit": 1}}, "unit"),
        ({"key": "k", "rate_limit": {"unit": "second", "requests_per_unit": 0}}, "greater"),
        ({"key": "", "rate_limit": LIMIT}, "at least 1"),
    ],
)
def test_bad_descriptors_are_refused_naming_the_problem(
    descriptor: dict[str, Any], problem: str
) -> None:
    """Every mistake stops the file with the field's path and why."""
    with pytest.raises(ConfigurationError) as caught:
        parse_config(section(descriptor))
    assert "envoy.domains.0.descriptors.0" in str(caught.value)
    assert problem in str(caught.value)


def test_two_limits_of_one_name_are_refused() -> None:
    """Names are what RateLimit-Policy shows: two limits may not share one."""
    with pytest.raises(ConfigurationError, match="two descriptors are named 'x'"):
        parse_config(
            section(
                {"key": "a", "rate_limit": LIMIT, "name": "x"},
                {"key": "b", "rate_limit": LIMIT, "name": "x"},
            )
        )


def test_shadow_mode_everywhere() -> None:
    """envoy.shadow_mode makes every limit a shadow one."""
    config = parse_config(section({"key": "k", "rate_limit": LIMIT}, shadow_mode=True))
    assert all(p.shadow for p in compile_limits(config.envoy).policies.values())
