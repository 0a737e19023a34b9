"""Declared parameters of an endpoint (query, path, header): type, bounds, and their parsing.

Every parameter is bounded by construction: a number declares ``ge`` and ``le``, a string its
``max_length`` (or ``choices``). So a value no database or service can take (an ``offset`` of
2**65) is a 422 naming the parameter, never a 500 from deep inside. Booleans accept ``true``
and ``false`` only, integers digits only (no ``1.0``, no ``true``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gatekeeper.errors import InvalidInput

__all__ = ["Param", "header", "parse_params", "path", "query"]

Where = Literal["query", "path", "header"]
_INT = re.compile(r"[+-]?[0-9]{1,40}\Z")
_BOOLS = {"true": True, "false": False}


@dataclass(frozen=True)
class Param:
    """One declared parameter. Build it with :func:`query`, :func:`path` or :func:`header`."""

    name: str
    where: Where
    kind: type
    required: bool = False
    default: Any = None
    ge: float | None = None
    le: float | None = None
    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        # A parameter without bounds is a bug waiting for a hostile value: refuse to declare it.
        if self.kind in (int, float) and (self.ge is None or self.le is None):
            raise TypeError(f"parameter {self.name!r}: a number needs ge and le bounds")
        if self.kind is str and self.max_length is None and not self.choices:
            raise TypeError(f"parameter {self.name!r}: a string needs max_length or choices")
        if self.kind not in (int, float, str, bool):
            raise TypeError(f"parameter {self.name!r}: type {self.kind!r} is not supported")

    def schema(self) -> dict[str, Any]:
        """The parameter's JSON schema (OpenAPI)."""
        schema: dict[str, Any]
        if self.kind is bool:
            schema = {"type": "boolean"}
        elif self.kind in (int, float):
            schema = {"type": "integer" if self.kind is int else "number"}
            schema["minimum"] = self.ge
            schema["maximum"] = self.le
        elif self.choices:
            schema = {"type": "string", "enum": list(self.choices)}
        else:
            schema = {"type": "string", "maxLength": self.max_length}
            if self.min_length:
                schema["minLength"] = self.min_length
            if self.pattern is not None:
                schema["pattern"] = self.pattern
        if self.default is not None:
            schema["default"] = self.default
        return schema

    def convert(self, raw: str) -> Any:
        """``raw`` as this parameter's type; ``ValueError`` naming the rule it breaks."""
        kind = self.kind
        if kind is int:
            if not _INT.match(raw):
                raise ValueError("must be an integer")
            return self._bounded(int(raw))
        if kind is float:
            try:
                number = float(raw)
            except ValueError:
                raise ValueError("must be a number") from None
            if not math.isfinite(number):
                raise ValueError("must be a finite number")
            return self._bounded(number)
        if kind is bool:
            value = _BOOLS.get(raw)
            if value is None:
                raise ValueError("must be true or false")
            return value
        if self.choices:
            if raw not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)}")
            return raw
        if len(raw) < self.min_length:
            raise ValueError(f"must be at least {self.min_length} characters")
        if self.max_length is not None and len(raw) > self.max_length:
            raise ValueError(f"must be at most {self.max_length} characters")
        if "\x00" in raw:
            raise ValueError("must not contain NUL characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, raw):
            raise ValueError(f"must match {self.pattern}")
        return raw

    def _bounded(self, number: float) -> Any:
        if self.ge is not None and number < self.ge:
            raise ValueError(f"must be at least {_show(self.ge)}")
        if self.le is not None and number > self.le:
            raise ValueError(f"must be at most {_show(self.le)}")
        return number


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _factory(where: Where) -> Callable[..., Param]:
    def declare(name: str, kind: type = str, **options: Any) -> Param:
        if where == "path":
            options["required"] = True
        elif "default" in options and "required" not in options:
            options["required"] = False
        return Param(name, where, kind, **options)

    declare.__name__ = where
    declare.__doc__ = f"A {where} parameter (see :class:`Param` for the options)."
    return declare


query = _factory("query")
path = _factory("path")
header = _factory("header")


def parse_params(params: Sequence[Param], call: Any) -> dict[str, Any]:
    """The declared parameters of ``call`` converted and checked; :class:`InvalidInput`
    naming every parameter at fault."""
    values: dict[str, Any] = {}
    problems: list[dict[str, str]] = []
    for param in params:
        raw: str | None
        if param.where == "query":
            raw = call.query_value(param.name)
        elif param.where == "path":
            raw = call.path_params.get(param.name)
        else:
            raw = call.header_text(param.name)
        if raw is None:
            if param.required:
                problems.append({"field": param.name, "in": param.where, "problem": "is required"})
            else:
                values[param.name] = param.default
            continue
        try:
            values[param.name] = param.convert(raw)
        except ValueError as exc:
            problems.append({"field": param.name, "in": param.where, "problem": str(exc)})
    if problems:
        summary = "; ".join(f"{p['field']} ({p['in']}): {p['problem']}" for p in problems)
        raise InvalidInput(summary, problems)
    return values
