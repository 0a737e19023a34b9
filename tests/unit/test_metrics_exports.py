"""The public surface of gatekeeper.observability is curated: complete, sorted, importable."""

from __future__ import annotations

import types

import gatekeeper.observability as observability


def test_all_is_sorted_and_lists_every_public_name() -> None:
    """__all__ is sorted (ruff's order) and names exactly the package's public attributes."""
    public = {
        name
        for name, value in vars(observability).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert set(observability.__all__) == public
    constants = [n for n in observability.__all__ if n.isupper()]
    others = [n for n in observability.__all__ if not n.isupper()]
    assert observability.__all__ == sorted(constants) + sorted(others)
    for name in observability.__all__:
        assert getattr(observability, name) is not None
