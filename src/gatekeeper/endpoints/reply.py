"""What an endpoint answers: a :class:`Reply` whose body is in hand, or a :class:`StreamReply`
whose chunks come later (Server-Sent Events), and the builders every endpoint uses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.problem import PROBLEM_JSON, Problem, problem_body

__all__ = [
    "JSON",
    "Headers",
    "Reply",
    "StreamReply",
    "bytes_reply",
    "json_reply",
    "problem_reply",
    "reply_of",
]

Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"

_ENCODE = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str
).encode


@dataclass(slots=True)
class Reply:
    """A complete answer: status, header fields (lower-case names) and the body."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""


@dataclass(slots=True)
class StreamReply:
    """An answer whose body is produced as it goes (``chunks``); the writer frames it (chunked
    encoding) and closes the iterator when the client goes away."""

    status: int
    headers: Headers
    chunks: AsyncIterator[bytes]


def json_reply(value: Any, status: int = 200, headers: Headers | None = None) -> Reply:
    """``value`` as compact UTF-8 JSON with its content type."""
    extra = headers or []
    return Reply(status, [(b"content-type", JSON), *extra], _ENCODE(value).encode())


def bytes_reply(
    body: bytes, content_type: bytes, status: int = 200, headers: Headers | None = None
) -> Reply:
    """Raw bytes of the given content type."""
    extra = headers or []
    return Reply(status, [(b"content-type", content_type), *extra], body)


def problem_reply(
    status: int, error: str, detail: str, headers: Headers | None = None, /, **extra: Any
) -> Reply:
    """A problem document (see :mod:`gatekeeper.problem`)."""
    head = [(b"content-type", PROBLEM_JSON), *(headers or ())]
    return Reply(status, head, problem_body(status, error, detail, **extra))


def reply_of(problem: Problem) -> Reply:
    """The reply carrying ``problem``."""
    return Reply(
        problem.status, [(b"content-type", PROBLEM_JSON), *problem.headers], problem.body()
    )
