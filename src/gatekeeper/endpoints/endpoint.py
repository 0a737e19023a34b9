"""One built-in endpoint, declared once: method, path, guard, handler and its description.

A component contributes its endpoints as a list (or a :class:`Routes`, built with decorators):

    routes = Routes(tags=("gateway",))

    @routes.get("/health", summary="Liveness", responses={200: Answer("Alive", Health)})
    def health(call: Call) -> Reply:
        return HEALTHY

The path is a template (``/admin/users/{user_id}``): each ``{name}`` matches one path segment
and must be declared as a path parameter. ``responses`` documents every answer the handler
itself gives; the answers of the guard (401, 403), of parameter and body validation (400,
413, 422) are added by the endpoint, so the OpenAPI document lists every status it can send.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from gatekeeper.endpoints.guards import PUBLIC, Guard
from gatekeeper.endpoints.params import Param
from gatekeeper.endpoints.reply import Reply, StreamReply

__all__ = ["PROBLEM", "Answer", "Endpoint", "Handler", "Routes", "problem"]

Result = Reply | StreamReply
Handler = Callable[[Any], Result | Awaitable[Result]]
Schema = type[BaseModel] | Mapping[str, Any] | None

# The schema marker of a problem document (``openapi.py`` puts the real schema in place).
PROBLEM: Mapping[str, Any] = {"$ref": "#/components/schemas/Problem"}
_SEGMENT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Answer:
    """One documented answer: its description, body schema (a pydantic model or a JSON schema)
    and content type, and the header fields it carries (name -> description)."""

    description: str
    schema: Schema = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def problem(description: str, **headers: str) -> Answer:
    """A documented error answer (``application/problem+json``)."""
    return Answer(description, PROBLEM, "application/problem+json", headers)


@dataclass(frozen=True)
class Endpoint:
    """A built-in endpoint (see the module docstring)."""

    method: str
    path: str
    handler: Handler
    guard: Guard = PUBLIC
    summary: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True
    responses: Mapping[int, Answer] = field(default_factory=dict)
    include_in_schema: bool = True
    operation_id: str = ""
    _async_handler: bool = field(default=False, init=False, repr=False, compare=False)
    _answers_now: bool = field(default=True, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", self.method.upper())
        if not self.path.startswith("/"):
            raise ValueError(f"endpoint path {self.path!r} must start with '/'")
        declared = {p.name for p in self.params if p.where == "path"}
        named = set(_SEGMENT.findall(self.path))
        if declared != named:
            raise ValueError(f"{self.method} {self.path}: declare exactly the path parameters")
        if not self.operation_id:
            words = re.sub(r"[^A-Za-z0-9]+", "_", self.path).strip("_") or "root"
            object.__setattr__(self, "operation_id", f"{self.method.lower()}_{words}")
        # Decided once: inspecting a function on every request costs a microsecond or two.
        is_async = inspect.iscoroutinefunction(self.handler)
        object.__setattr__(self, "_async_handler", is_async)
        object.__setattr__(self, "_answers_now", not (is_async or self.guard.is_async))

    @property
    def is_async(self) -> bool:
        """Whether the handler is a coroutine function."""
        return self._async_handler

    @property
    def answers_now(self) -> bool:
        """Whether the guard and the handler are plain functions: the dispatcher then answers
        at once (no awaitable)."""
        return self._answers_now

    @property
    def templated(self) -> bool:
        """Whether the path has parameters."""
        return "{" in self.path

    def pattern(self) -> re.Pattern[str]:
        """The path template as a regular expression (one segment per parameter)."""
        parts = _SEGMENT.split(self.path)
        regex = ""
        for i, part in enumerate(parts):
            regex += f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part)
        return re.compile(regex + r"\Z")

    def all_responses(self) -> dict[int, Answer]:
        """Every answer this endpoint can give: its own, its guard's and validation's."""
        answers: dict[int, Answer] = {}
        for status, why in self.guard.responses.items():
            headers = {"WWW-Authenticate": "How to authenticate."} if status == 401 else {}
            answers[status] = problem(why, **headers)
        if self.body is not None:
            answers[400] = problem("The body is not valid JSON.")
            answers[413] = problem("The body is larger than the built-in API accepts.")
        if self.body is not None or self.params:
            answers[422] = problem("A parameter or a body field is invalid (each is named).")
        answers.update(self.responses)
        return dict(sorted(answers.items()))


class Routes:
    """A list of endpoints built with decorators; shared defaults (tags, guard, responses)."""

    def __init__(
        self,
        *,
        tags: Sequence[str] = (),
        guard: Guard = PUBLIC,
        responses: Mapping[int, Answer] | None = None,
    ) -> None:
        self.tags = tuple(tags)
        self.guard = guard
        self.responses = dict(responses or {})
        self.endpoints: list[Endpoint] = []

    def add(self, method: str, path: str, handler: Handler, **options: Any) -> Endpoint:
        """Declare ``handler`` for ``method`` and ``path``."""
        options.setdefault("tags", self.tags)
        options.setdefault("guard", self.guard)
        options["responses"] = {**self.responses, **options.get("responses", {})}
        if "summary" not in options and handler.__doc__:
            options["summary"] = handler.__doc__.strip().splitlines()[0]
        endpoint = Endpoint(method, path, handler, **options)
        self.endpoints.append(endpoint)
        return endpoint

    def route(self, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
        """A decorator declaring the function it wraps."""

        def declare(handler: Handler) -> Handler:
            self.add(method, path, handler, **options)
            return handler

        return declare

    def get(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **options)

    def put(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **options)

    def patch(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **options)

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.endpoints)

    def __len__(self) -> int:
        return len(self.endpoints)
