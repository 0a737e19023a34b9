"""A benchmark's result: a table of rows, ratios against baselines, and targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Target:
    """A claim the benchmark checks, e.g. ``engine/redis >= 10x limits``."""

    description: str
    measured: float
    required: float

    @property
    def met(self) -> bool:
        return self.measured >= self.required


@dataclass
class Report:
    """Rows of measurements (each a dict with the same keys) plus targets."""

    name: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def targets_met(self) -> bool:
        return all(t.met for t in self.targets)

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def target(self, description: str, measured: float, required: float) -> None:
        self.targets.append(Target(description, measured, required))

    def render(self) -> str:
        def fmt(value: Any) -> str:
            if isinstance(value, float):
                return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
            if isinstance(value, int):
                return f"{value:,}"
            return str(value)

        cells = [[fmt(row.get(c, "")) for c in self.columns] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        line = " | ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))
        out = [f"## {self.name}", "", line, "-|-".join("-" * w for w in widths)]
        out += [" | ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        if self.targets:
            out.append("")
            for t in self.targets:
                mark = "PASS" if t.met else "MISS"
                out.append(
                    f"[{mark}] {t.description}: {fmt(t.measured)} (need >= {fmt(t.required)})"
                )
        return "\n".join(out) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": self.columns,
            "rows": self.rows,
            "targets": [
                {
                    "description": t.description,
                    "measured": t.measured,
                    "required": t.required,
                    "met": t.met,
                }
                for t in self.targets
            ],
            "meta": self.meta,
        }
