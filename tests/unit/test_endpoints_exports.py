"""The public surface of gatekeeper.endpoints is curated: complete, sorted, importable."""

from __future__ import annotations

import types

import gatekeeper.endpoints as endpoints


def test_all_is_sorted_and_lists_every_public_name() -> None:
    """__all__ names exactly the public, non-module attributes of the package, once each (its
    order is ruff's, RUF022: constants, classes, functions)."""
    public = sorted(
        name
        for name, value in vars(endpoints).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    )
    assert len(set(endpoints.__all__)) == len(endpoints.__all__)
    assert sorted(endpoints.__all__) == public


def test_the_table_is_neutral() -> None:
    """The package imports no component (components import it): no gateway, identity,
    waiting room or observability component module in its sources."""
    import pathlib

    forbidden = (
        "gatekeeper.gateway",
        "gatekeeper.identity",
        "gatekeeper.waitingroom",
        "gatekeeper.observability.component",
        "gatekeeper.app",
    )
    package = pathlib.Path(endpoints.__file__).parent
    for source in package.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        for name in forbidden:
            assert f"import {name}" not in text, (source, name)
            assert f"from {name}" not in text, (source, name)
