"""Unit tests of structured logging: request ids, the access line and its termination codes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from gatekeeper.observability.logging import (
    AccessEntry,
    AccessLog,
    RequestIdMiddleware,
    Termination,
    accept_request_id,
    configure,
    configured_output,
    get_logger,
    request_id_of,
)
from gatekeeper.settings import Settings


def _unconfigure() -> None:
    structlog.reset_defaults()
    output = configured_output()
    output.stream, output.fmt, output.access_enabled = None, "json", True
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_gatekeeper", False)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure(Settings(log_format="json", log_level="info"), stream=stream)
    yield stream
    _unconfigure()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _entry(**kw: object) -> AccessEntry:
    base: dict[str, object] = {
        "request_id": "r1",
        "method": "GET",
        "path": "/api/x",
        "client_ip": "10.0.0.1",
        "status": 200,
        "duration": 0.0123,
        "route": "api",
    }
    base.update(kw)
    return AccessEntry(**base)  # type: ignore[arg-type]


def test_sane_client_request_id_is_kept_and_bad_one_replaced() -> None:
    """A plain X-Request-ID is reused; an overlong or odd one is replaced by a fresh hex id."""
    assert accept_request_id(b"abc-123") == "abc-123"
    assert accept_request_id("x" * 129) != "x" * 129
    fresh = accept_request_id('evil"\n{json}')
    assert len(fresh) == 32
    assert int(fresh, 16) >= 0
    assert accept_request_id(None) != accept_request_id(None)


def test_request_id_of_is_decided_once_per_scope() -> None:
    """request_id_of reads the header once and returns the same id for the same scope."""
    scope: dict[str, object] = {"type": "http", "headers": [(b"x-request-id", b"client-7")]}
    assert request_id_of(scope) == "client-7"  # type: ignore[arg-type]
    other: dict[str, object] = {"type": "http", "headers": []}
    first = request_id_of(other)  # type: ignore[arg-type]
    assert request_id_of(other) == first  # type: ignore[arg-type]


async def test_middleware_echoes_id_and_binds_it_to_log_lines(log_stream: io.StringIO) -> None:
    """The middleware adds X-Request-ID to the response and to every log line of the request."""
    log = get_logger("test")

    async def app(scope: object, receive: object, send: object) -> None:
        log.info("inside")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"x-request-id", b"upstream-said")],
            }
        )  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    scope = {"type": "http", "headers": [(b"x-request-id", b"req-42")]}
    await RequestIdMiddleware(app)(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["headers"] == [(b"x-request-id", b"req-42")]
    line = _lines(log_stream)[0]
    assert line["event"] == "inside"
    assert line["request_id"] == "req-42"
    log.info("after")
    assert "request_id" not in _lines(log_stream)[1]


def test_access_line_is_json_with_termination_code(log_stream: io.StringIO) -> None:
    """A limited request's access line names the policy and carries term=RL and duration_ms."""
    AccessLog().emit(_entry(status=429, policy="per-ip", limit_key="10.0.0.1"))
    (line,) = _lines(log_stream)
    assert line["event"] == "access"
    assert line["term"] == "RL"
    assert line["termination"] == "limited"
    assert line["policy"] == "per-ip"
    assert line["status"] == 429
    assert line["duration_ms"] == 12.3
    assert line["level"] == "info"
    assert "timestamp" in line
    assert "upstream" not in line
    assert "degraded" not in line


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"upstream": "pool", "status": 200}, Termination.FORWARDED),
        ({"upstream": "pool", "status": 500}, Termination.FORWARDED),
        ({"upstream": "pool", "status": 504}, Termination.UPSTREAM_TIMEOUT),
        ({"upstream": "pool", "status": 502}, Termination.UPSTREAM_ERROR),
        ({"cache": "hit"}, Termination.CACHED),
        ({"cache": "stale", "upstream": "pool"}, Termination.STALE),
        ({"status": 429}, Termination.LIMITED),
        ({"status": 404, "route": None}, Termination.NO_ROUTE),
        ({"status": 401}, Termination.UNAUTHENTICATED),
        ({"status": 200}, Termination.BUILTIN),
        ({"status": 503, "termination": Termination.BREAKER_OPEN}, Termination.BREAKER_OPEN),
    ],
)
def test_termination_is_inferred_when_not_given(
    fields: dict[str, object], expected: Termination
) -> None:
    """Without an explicit termination, status, cache and upstream decide the reason."""
    assert _entry(**fields).resolved_termination() is expected


def test_every_termination_has_a_unique_two_letter_code() -> None:
    """Codes are two characters and distinct, so that grep 'term":"XY' finds one reason."""
    codes = [t.code for t in Termination]
    assert all(len(c) == 2 for c in codes)
    assert len(set(codes)) == len(codes)


def test_sinks_receive_entries_and_a_failing_sink_does_not_raise(
    log_stream: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sinks see each entry; one that raises is reported once and the others still run."""
    seen: list[AccessEntry] = []

    def broken(entry: AccessEntry) -> None:
        raise RuntimeError("dashboard bug")

    access = AccessLog()
    access.add_sink(broken)
    access.add_sink(seen.append)
    access.emit(_entry())
    access.emit(_entry())
    assert [e.request_id for e in seen] == ["r1", "r1"]
    assert [line["event"] for line in _lines(log_stream)] == ["access", "access"]
    assert capsys.readouterr().err.count("dashboard bug") == 1


def test_buffered_lines_wait_for_flush(log_stream: io.StringIO) -> None:
    """With buffer_lines > 1, lines are written in one batch when flushed or the buffer fills."""
    access = AccessLog(buffer_lines=3)
    access.emit(_entry(request_id="a"))
    access.emit(_entry(request_id="b"))
    assert log_stream.getvalue() == ""
    access.flush()
    assert [line["request_id"] for line in _lines(log_stream)] == ["a", "b"]
    for rid in "cde":
        access.emit(_entry(request_id=rid))
    assert [line["request_id"] for line in _lines(log_stream)] == ["a", "b", "c", "d", "e"]


def test_access_lines_follow_the_configured_level_and_format() -> None:
    """At level warning there is no access line; in console format it is key=value text."""
    stream = io.StringIO()
    configure(Settings(log_format="json", log_level="warning"), stream=stream)
    try:
        AccessLog().emit(_entry())
        assert stream.getvalue() == ""
        configure(Settings(log_format="console", log_level="info"), stream=stream)
        AccessLog().emit(_entry(status=429))
        text = stream.getvalue()
        assert " access " in text
        assert "term=RL" in text
        assert not text.startswith("{")
    finally:
        _unconfigure()


def test_stdlib_loggers_render_as_json_too(log_stream: io.StringIO) -> None:
    """Library loggers (uvicorn, alembic) come out as the same JSON lines."""
    logging.getLogger("uvicorn.error").warning("port %d busy", 8080)
    (line,) = _lines(log_stream)
    assert line["event"] == "port 8080 busy"
    assert line["level"] == "warning"
    assert line["logger"] == "uvicorn.error"


def test_console_format_is_not_json() -> None:
    """log_format=console writes human lines."""
    stream = io.StringIO()
    configure(Settings(log_format="console"), stream=stream)
    try:
        get_logger().info("hello", n=1)
        assert "hello" in stream.getvalue()
        assert not stream.getvalue().startswith("{")
    finally:
        _unconfigure()
