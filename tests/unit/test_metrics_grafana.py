"""The Grafana dashboard only charts metrics that exist, with labels that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from gatekeeper.observability.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "gatekeeper-dashboard.json"
_SUFFIXES = ("_bucket", "_count", "_sum")


def _label_names() -> dict[str, set[str]]:
    metrics = Metrics()
    out: dict[str, set[str]] = {}
    for attribute in vars(metrics).values():
        names = getattr(attribute, "_labelnames", None)
        name = getattr(attribute, "_name", None)
        if names is None or name is None:
            continue
        kind = getattr(attribute, "_type", "")
        series = {name}
        if kind == "counter":
            series = {f"{name}_total"}
        elif kind == "histogram":
            series = {name + s for s in _SUFFIXES}
        for s in series:
            out[s] = set(names) | ({"le"} if s.endswith("_bucket") else set())
    return out


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in _exprs(value)]
    if isinstance(node, list):
        return [e for item in node for e in _exprs(item)]
    return []


def test_every_charted_metric_and_label_is_exported() -> None:
    """Each PromQL query names an exported series and groups/filters by labels it has."""
    exported = _label_names()
    exprs = _exprs(json.loads(DASHBOARD.read_text()))
    assert len(exprs) >= 25
    charted: set[str] = set()
    for expr in exprs:
        for name, selector in re.findall(r"(gatekeeper_[a-z_]+)(\{[^}]*\})?", expr):
            assert name in exported, f"{name} in {expr!r} is not exported"
            charted.add(name)
            for label in re.findall(r"(\w+)\s*=~?", selector or ""):
                assert label in exported[name] | {"instance"}, f"{label} not a label of {name}"
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (part.strip() for part in group.split(",")):
                assert (
                    any(label in exported[n] for n in re.findall(r"gatekeeper_[a-z_]+", expr))
                    or label == "instance"
                ), (label, expr)
    # Every metric family appears on the dashboard at least once.
    families = {re.sub(r"(_total|_bucket|_count|_sum)$", "", n) for n in exported}
    shown = {re.sub(r"(_total|_bucket|_count|_sum)$", "", n) for n in charted}
    assert families == shown, families - shown
