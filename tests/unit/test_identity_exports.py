"""The public surfaces of identity, persistence and sdk: complete, sorted, documented."""

from __future__ import annotations

import importlib
import inspect

import pytest


@pytest.mark.parametrize(
    "module_name", ["gatekeeper.identity", "gatekeeper.persistence", "gatekeeper.sdk"]
)
def test_exports_are_sorted_importable_and_documented(module_name: str) -> None:
    """``__all__`` is sorted, every name exists, and every exported class has a docstring."""
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert names == sorted(names)
    for name in names:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{module_name}.{name} has no docstring"
