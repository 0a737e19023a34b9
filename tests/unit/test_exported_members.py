"""The public surface of gatekeeper.limits is curated: complete, sorted, importable."""

from __future__ import annotations

import types

import gatekeeper.limits as limits

REQUIRED = {
    "Algorithm",
    "Check",
    "Decision",
    "FailureMode",
    "Limiter",
    "Policy",
    "PolicyResult",
    "Rate",
    "RateLimit",
    "RateLimitMiddleware",
    "by_api_key",
    "by_header",
    "by_ip",
    "by_user",
    "parse_rate",
    "rate_limit_headers",
    "storage_from_url",
}


def test_all_is_sorted_and_lists_every_public_name() -> None:
    """__all__ is sorted and names exactly the public, non-module attributes of the package."""
    public = sorted(
        name
        for name, value in vars(limits).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    )
    assert limits.__all__ == sorted(limits.__all__)
    assert limits.__all__ == public


def test_the_documented_names_are_exported() -> None:
    """Everything docs/limits.md and the other components use is importable from the package."""
    assert set(limits.__all__) >= REQUIRED
    for name in limits.__all__:
        assert getattr(limits, name) is not None
