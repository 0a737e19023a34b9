"""The one error answer of every HTTP edge: an ``application/problem+json`` document.

Every error Gatekeeper answers over HTTP (built-in endpoints, the gateway's own refusals) has
one JSON shape, RFC 9457's members plus the two plain fields clients and tests read::

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "error": "not_found", "detail": "user 'u1' does not exist", ...extra members}

``error`` is a machine code (snake_case), ``detail`` a sentence for people. Extra members carry
what a particular answer adds: ``problems`` for invalid input, ``retry_after`` (seconds, as the
``Retry-After`` field says) on every 429 and 503 that says when to retry, and whatever an
exception names in its ``problem_members`` (a waiting room's 403 says which key is needed).

:func:`problem_of` is THE map from an exception to its answer (:func:`status_of` its status and
code), used at every edge: the gateway's request path and the built-in endpoints:

==========================  ======  ========================
exception                   status  ``error``
==========================  ======  ========================
BadRequest                  400     ``bad_request``
InvalidInput                422     ``invalid_input``
TokenError                  401     ``invalid_token``
AuthenticationError         401     ``unauthorized``
PermissionDenied            403     ``forbidden``
NotFound                    404     ``not_found``
Conflict                    409     ``conflict``
BodyTooLarge                413     ``payload_too_large``
RateLimitExceeded           429     ``rate_limited`` (Retry-After)
QueueFull                   503     ``queue_full`` (Retry-After)
StorageError                503     ``storage_unavailable`` (Retry-After)
PersistenceError            503     ``database_unavailable`` (Retry-After)
NoHealthyUpstream           503     ``no_healthy_upstream``
UpstreamTimeout             504     ``upstream_timeout``
UpstreamError               502     ``bad_gateway``
anything else               500     ``internal_error``
==========================  ======  ========================

Back-end failures (storage, database) and unexpected exceptions never show their text: it may
hold SQL, parameters or addresses. This module imports only the standard library and
:mod:`gatekeeper.errors` so that any edge can use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from gatekeeper.errors import (
    AuthenticationError,
    BadRequest,
    BodyTooLarge,
    Conflict,
    GatekeeperError,
    InvalidInput,
    NoHealthyUpstream,
    NotFound,
    PermissionDenied,
    PersistenceError,
    QueueFull,
    RateLimitExceeded,
    StorageError,
    TokenError,
    UpstreamError,
    UpstreamTimeout,
)

__all__ = [
    "CONTENT_TYPE",
    "PROBLEM_JSON",
    "WWW_AUTHENTICATE",
    "Problem",
    "exception_body",
    "problem",
    "problem_body",
    "problem_of",
    "status_of",
    "title_of",
]

PROBLEM_JSON = b"application/problem+json"
CONTENT_TYPE = PROBLEM_JSON
# Every 401 says how to authenticate (RFC 9110 11.6.1).
WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="gatekeeper"')

_TITLES = {status.value: status.phrase for status in HTTPStatus}
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

Header = tuple[bytes, bytes]


def title_of(status: int) -> str:
    """The HTTP reason phrase of ``status`` (``"Error"`` for a code HTTP does not name)."""
    return _TITLES.get(status, "Error")


def problem(status: int, error: str, detail: str, /, **extra: Any) -> dict[str, Any]:
    """The problem document of an answer (``extra`` members follow the standard ones, which
    they cannot replace, even one named ``status``: e.g. ``retry_after``, ``problems``)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title_of(status),
        "status": status,
        "error": error,
        "detail": detail,
    }
    for key, value in extra.items():
        body.setdefault(key, value)
    return body


def problem_body(status: int, error: str, detail: str, /, **extra: Any) -> bytes:
    """:func:`problem`, encoded as UTF-8 JSON."""
    return _ENCODE(problem(status, error, detail, **extra)).encode()


@dataclass(frozen=True, slots=True)
class Problem:
    """An error answer before it is written: status, code, sentence, headers, extra members."""

    status: int
    error: str
    detail: str
    headers: tuple[Header, ...] = ()
    extra: Mapping[str, Any] | None = None

    def body(self) -> bytes:
        """The document's bytes."""
        return problem_body(self.status, self.error, self.detail, **(self.extra or {}))


# Order matters: subclasses before their bases.
_MAP: tuple[tuple[type[BaseException], int, str], ...] = (
    (BadRequest, 400, "bad_request"),
    (InvalidInput, 422, "invalid_input"),
    (TokenError, 401, "invalid_token"),
    (AuthenticationError, 401, "unauthorized"),
    (PermissionDenied, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (BodyTooLarge, 413, "payload_too_large"),
    (RateLimitExceeded, 429, "rate_limited"),
    (QueueFull, 503, "queue_full"),
    (StorageError, 503, "storage_unavailable"),
    (PersistenceError, 503, "database_unavailable"),
    (NoHealthyUpstream, 503, "no_healthy_upstream"),
    (UpstreamTimeout, 504, "upstream_timeout"),
    (UpstreamError, 502, "bad_gateway"),
)
_HIDDEN = {
    "storage_unavailable": "the shared store is unavailable; retry later",
    "database_unavailable": "the database is unavailable; retry later",
}
_INTERNAL = Problem(500, "internal_error", "internal error")


def problem_of(exc: BaseException) -> Problem:
    """The answer for ``exc`` (a 500 ``internal_error`` for anything not in the map)."""
    if not isinstance(exc, GatekeeperError):
        return _INTERNAL
    found = next((entry for entry in _MAP if isinstance(exc, entry[0])), None)
    if found is None:
        return _INTERNAL
    _, status, error = found
    headers: tuple[Header, ...] = ()
    extra: dict[str, Any] | None = None
    detail = _HIDDEN.get(error) or str(exc) or title_of(status)
    if status == 401:
        headers = (WWW_AUTHENTICATE,)
    elif isinstance(exc, RateLimitExceeded):
        retry = exc.decision.retry_after
        headers = ((b"retry-after", str(retry).encode()),)
        extra = {"retry_after": retry, "policy": exc.decision.policy}
    elif isinstance(exc, QueueFull) or error in _HIDDEN:
        # (A back end that knows when it will be back says so: the waiting room's breaker.)
        given = getattr(exc, "retry_after", None)
        retry = given if type(given) is int and given > 0 else 1
        headers = ((b"retry-after", str(retry).encode()),)
        extra = {"retry_after": retry}
    elif isinstance(exc, InvalidInput) and exc.problems:
        extra = {"problems": exc.problems}
    members = exc.problem_members
    if members:
        extra = {**members, **(extra or {})}
    return Problem(status, error, detail, headers, extra)


def status_of(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code that answer ``exc`` (see :func:`problem_of`)."""
    found = problem_of(exc)
    return found.status, found.error


def exception_body(exc: BaseException) -> tuple[int, bytes]:
    """The status and problem body that answer ``exc``."""
    found = problem_of(exc)
    return found.status, found.body()
