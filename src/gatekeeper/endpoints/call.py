"""What a handler sees of one request: a :class:`Call`.

The caller (the gateway, or the ASGI adapter) builds it from what it parsed already: the
method, the decoded path, the raw query string, the header fields as a list of lower-case
``(name, value)`` byte pairs, the client address it resolved (trusted proxies applied), the
request id, and the body, read whole and bounded. The dispatcher adds the path parameters, the
declared parameters converted and checked (``params``), the validated body (``data``) and what
the endpoint's guard returned (``principal``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError

from gatekeeper.errors import BadRequest, InvalidInput

__all__ = ["Call", "validation_problems"]

M = TypeVar("M", bound=BaseModel)
Headers = list[tuple[bytes, bytes]]

# A query string with more fields than this is refused (parse_qs would build them all).
MAX_QUERY_FIELDS = 100


def _never() -> bool:
    return False


class Call:
    """One request to a built-in endpoint."""

    __slots__ = (
        "_query",
        "body",
        "client_ip",
        "data",
        "headers",
        "is_disconnected",
        "method",
        "params",
        "path",
        "path_params",
        "principal",
        "query_string",
        "request_id",
    )

    def __init__(
        self,
        method: str,
        path: str,
        *,
        query_string: bytes = b"",
        headers: Headers | None = None,
        client_ip: str = "",
        request_id: str = "",
        body: bytes = b"",
        is_disconnected: Callable[[], bool] = _never,
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers: Headers = headers if headers is not None else []
        self.client_ip = client_ip
        self.request_id = request_id
        self.body = body
        self.is_disconnected = is_disconnected
        self.path_params: dict[str, str] = {}
        self.params: dict[str, Any] = {}
        self.data: Any = None
        self.principal: Any = None
        self._query: dict[str, list[str]] | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case bytes), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_text(self, name: str) -> str | None:
        """The first value of header ``name`` as text (latin-1, as HTTP defines it)."""
        value = self.header(name.lower().encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string's fields (parsed on first use; blank values kept)."""
        parsed = self._query
        if parsed is None:
            text = self.query_string.decode("utf-8", "replace")
            try:
                parsed = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
            except ValueError as exc:
                raise BadRequest(
                    f"the query string has more than {MAX_QUERY_FIELDS} fields"
                ) from exc
            self._query = parsed
        return parsed

    def query_value(self, name: str) -> str | None:
        """The first value of query field ``name``, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def json(self, model: type[M]) -> M:
        """The body validated as ``model`` in strict mode (``true`` is not a number, ``"1"`` is
        not an integer): :class:`BadRequest` (400) when it is not JSON, :class:`InvalidInput`
        (422, naming every field at fault) when it breaks the model."""
        try:
            return model.model_validate_json(self.body or b"null", strict=True)
        except ValidationError as exc:
            raise _invalid(exc) from None


def validation_problems(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as ``{"field", "problem"}`` pairs (never the input: it may be a
    password)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error.get("loc", ())) or "body"
        problems.append({"field": field, "problem": str(error.get("msg", "invalid"))})
    return problems


def _invalid(exc: ValidationError) -> InvalidInput:
    errors = exc.errors(include_input=False, include_url=False)
    if any(e.get("type") == "json_invalid" for e in errors):
        return BadRequest("the body is not valid JSON")
    problems = validation_problems(exc)
    if len(errors) == 1 and errors[0].get("type") == "model_type" and not errors[0].get("loc"):
        problems = [{"field": "body", "problem": "a JSON object is required"}]
    summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return InvalidInput(summary or "invalid request body", problems)
