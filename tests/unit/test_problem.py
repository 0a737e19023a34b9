"""The one problem shape and the one map from exception to status (gatekeeper.problem)."""

from __future__ import annotations

import json

import pytest

from gatekeeper.errors import (
    AuthenticationError,
    BadRequest,
    BodyTooLarge,
    ConfigurationError,
    Conflict,
    InvalidInput,
    NoHealthyUpstream,
    NotFound,
    PermissionDenied,
    PersistenceError,
    QueueFull,
    RateLimitExceeded,
    StorageError,
    StorageTimeout,
    TokenError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from gatekeeper.limits.decision import Decision, PolicyResult
from gatekeeper.problem import PROBLEM_JSON, exception_body, problem_body, problem_of, status_of


def _decision() -> Decision:
    result = PolicyResult("per-ip", False, 5, 0, 12.0, 12.0)
    return Decision(False, (result,))


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (BadRequest("no header"), 400, "bad_request"),
        (InvalidInput("bad field"), 422, "invalid_input"),
        (TokenError("expired"), 401, "invalid_token"),
        (AuthenticationError("who?"), 401, "unauthorized"),
        (PermissionDenied("no"), 403, "forbidden"),
        (NotFound("gone"), 404, "not_found"),
        (Conflict("taken"), 409, "conflict"),
        (BodyTooLarge("big"), 413, "payload_too_large"),
        (RateLimitExceeded(_decision()), 429, "rate_limited"),
        (QueueFull("full", retry_after=3), 503, "queue_full"),
        (StorageTimeout("slow"), 503, "storage_unavailable"),
        (PersistenceError("SELECT secret"), 503, "database_unavailable"),
        (NoHealthyUpstream("none"), 503, "no_healthy_upstream"),
        (UpstreamTimeout("late"), 504, "upstream_timeout"),
        (UpstreamConnectError("refused"), 502, "bad_gateway"),
        (UpstreamError("broken"), 502, "bad_gateway"),
        (ConfigurationError("bug at request time"), 500, "internal_error"),
        (KeyError("secret-key-name"), 500, "internal_error"),
    ],
)
def test_every_exception_maps_to_one_status_and_code(
    exc: Exception, status: int, error: str
) -> None:
    """Each exception gets its status and machine code in the one problem shape."""
    problem = problem_of(exc)
    body = json.loads(problem.body())
    assert (problem.status, problem.error) == (status, error)
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert body["error"] == error
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]


def test_failures_of_back_ends_and_bugs_never_show_their_text() -> None:
    """500s and storage/database 503s say nothing of the exception's message."""
    for exc in (
        KeyError("hunter2"),
        StorageError("redis://:hunter2@host"),
        PersistenceError("hunter2"),
    ):
        assert b"hunter2" not in problem_of(exc).body()
    assert problem_of(KeyError("x")).detail == "internal error"


def test_retry_after_and_authentication_headers() -> None:
    """429 and 503 say when to retry; every 401 says how to authenticate."""
    limited = problem_of(RateLimitExceeded(_decision()))
    assert (b"retry-after", b"12") in limited.headers
    assert json.loads(limited.body())["retry_after"] == 12
    assert (b"retry-after", b"3") in problem_of(QueueFull("full", retry_after=3)).headers
    assert (b"retry-after", b"1") in problem_of(StorageError("down")).headers
    for exc in (AuthenticationError("x"), TokenError("y")):
        assert any(name == b"www-authenticate" for name, _ in problem_of(exc).headers)


def test_a_back_end_that_knows_when_it_is_back_says_so() -> None:
    """A 503 whose exception carries ``retry_after`` (the waiting room's open breaker) says
    that many seconds in Retry-After and the body; others say 1; the 429 and 503 bodies carry
    ``retry_after`` like their Retry-After field."""

    class BreakerOpen(StorageError):
        def __init__(self) -> None:
            super().__init__("breaker open")
            self.retry_after = 4

    found = problem_of(BreakerOpen())
    assert (found.status, found.error) == (503, "storage_unavailable")
    assert (b"retry-after", b"4") in found.headers
    assert json.loads(found.body())["retry_after"] == 4
    assert json.loads(problem_of(PersistenceError("x")).body())["retry_after"] == 1
    assert json.loads(problem_of(QueueFull("full", retry_after=3)).body())["retry_after"] == 3


def test_an_error_names_what_its_problem_document_adds() -> None:
    """``problem_members`` of an exception class become members of its answer (never in place
    of the standard ones)."""

    class KeyNeeded(PermissionDenied):
        problem_members = {"needed": "secret_key", "status": 999}

    body = json.loads(problem_of(KeyNeeded("use the key")).body())
    assert body["needed"] == "secret_key"
    assert (body["status"], body["error"], body["detail"]) == (403, "forbidden", "use the key")
    assert "needed" not in json.loads(problem_of(PermissionDenied("no")).body())


def test_invalid_input_lists_its_problems() -> None:
    """InvalidInput's field problems become the body's ``problems`` member."""
    problems = [{"field": "offset", "problem": "must be at most 10"}]
    body = json.loads(problem_of(InvalidInput("offset: too big", problems)).body())
    assert body["problems"] == problems
    assert body["detail"] == "offset: too big"


def test_extra_members_never_replace_the_standard_ones() -> None:
    """Extra members are added after the five standard ones, which they cannot overwrite."""
    body = json.loads(problem_body(404, "not_found", "gone", title="OK", type="x", hint="x"))
    assert body == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "error": "not_found",
        "detail": "gone",
        "hint": "x",
    }
    assert PROBLEM_JSON == b"application/problem+json"


def test_status_of_and_exception_body_follow_the_same_map() -> None:
    """The gateway's helpers answer exactly what problem_of says."""
    for exc in (NotFound("gone"), StorageError("down"), KeyError("bug"), BadRequest("x")):
        found = problem_of(exc)
        assert status_of(exc) == (found.status, found.error)
        assert exception_body(exc) == (found.status, found.body())
