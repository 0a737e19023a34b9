"""The one error shape every answer uses, and the one map from exception to status.

Errors leave Gatekeeper as RFC 9457 problem details (``application/problem+json``) with two
members of our own that clients and tests read: ``error``, a stable snake_case code, and
``detail``, a sentence for humans::

    {"type": "about:blank", "title": "Bad Gateway", "status": 502,
     "error": "bad_gateway", "detail": "upstream 10.0.0.7:8000: connection refused"}

:func:`status_of` is the edge's translation of :mod:`gatekeeper.errors` into HTTP: the gateway's
request path and the built-in endpoints both use it, so an exception means the same status
everywhere. Anything that is not a :class:`~gatekeeper.errors.GatekeeperError` is a 500 whose
detail never repeats the exception's text (it may hold internals).
"""

from __future__ import annotations

import http
import json
from typing import Any

from gatekeeper import errors

__all__ = ["CONTENT_TYPE", "exception_body", "problem", "problem_body", "status_of"]

CONTENT_TYPE = b"application/problem+json"

# Most specific first: the first class an exception is an instance of decides.
_STATUSES: tuple[tuple[type[BaseException], int, str], ...] = (
    (errors.BodyTooLarge, 413, "payload_too_large"),
    (errors.RateLimitExceeded, 429, "rate_limited"),
    (errors.QueueFull, 503, "queue_full"),
    (errors.NoHealthyUpstream, 503, "no_healthy_upstream"),
    (errors.UpstreamTimeout, 504, "upstream_timeout"),
    (errors.UpstreamError, 502, "bad_gateway"),
    (errors.StorageError, 503, "storage_unavailable"),
    (errors.AuthenticationError, 401, "unauthorized"),
    (errors.TokenError, 401, "invalid_token"),
    (errors.PermissionDenied, 403, "forbidden"),
    (errors.NotFound, 404, "not_found"),
    (errors.Conflict, 409, "conflict"),
    (errors.InvalidInput, 422, "invalid_input"),
)
_TITLES = {s.value: s.phrase for s in http.HTTPStatus}
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def status_of(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code that answer ``exc``."""
    for kind, status, code in _STATUSES:
        if isinstance(exc, kind):
            return status, code
    return 500, "internal_error"


def problem(status: int, error: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The problem document of an answer (``extra`` members are added after the standard
    ones, e.g. ``retry_after`` or ``tier``)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "error": error,
        "detail": detail,
    }
    if extra:
        body.update(extra)
    return body


def problem_body(status: int, error: str, detail: str, **extra: Any) -> bytes:
    """:func:`problem`, encoded as UTF-8 JSON."""
    return _ENCODE(problem(status, error, detail, **extra)).encode()


def exception_body(exc: BaseException) -> tuple[int, bytes]:
    """The status and problem body that answer ``exc`` (its message as the detail, except for
    unexpected exceptions, whose text is not shown)."""
    status, code = status_of(exc)
    detail = str(exc) if status != 500 else "an unexpected error occurred; it was logged"
    return status, problem_body(status, code, detail)
