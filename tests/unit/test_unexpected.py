"""An unexpected error costs one log line; its traceback at most once a minute per site."""

from __future__ import annotations

from typing import Any

from gatekeeper.observability.unexpected import UnexpectedErrors
from gatekeeper.testing import FakeClock


class _Lines:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


def _fail(secret: str) -> None:
    raise KeyError("missing")


def _raised(secret: str = "hunter2") -> KeyError:
    try:
        _fail(secret)
    except KeyError as exc:
        return exc
    raise AssertionError("unreachable")


def _elsewhere() -> ValueError:
    try:
        raise ValueError("other site")
    except ValueError as exc:
        return exc


def test_one_line_each_with_a_traceback_once_a_minute_per_site() -> None:
    """100 failures at one site in a minute: 100 lines, one traceback; a new site or a new
    minute gets its own traceback."""
    clock = FakeClock()
    lines = _Lines()
    reporter = UnexpectedErrors(clock=clock.monotonic, logger=lines)
    for i in range(100):
        reporter.report(_raised(), request_id=f"r{i}", where="GET /x")
    assert len(lines.lines) == 100
    with_trace = [line for line in lines.lines if "traceback" in line]
    assert len(with_trace) == 1
    assert lines.lines[0]["request_id"] == "r0"
    assert lines.lines[57]["request_id"] == "r57"
    assert "KeyError" in lines.lines[57]["error"]
    assert "_fail" in with_trace[0]["traceback"]
    reporter.report(_elsewhere(), request_id="other", where="GET /y")
    assert "traceback" in lines.lines[-1]
    clock.advance(59)
    reporter.report(_raised(), request_id="late", where="GET /x")
    assert "traceback" not in lines.lines[-1]
    clock.advance(1)
    reporter.report(_raised(), request_id="next-minute", where="GET /x")
    assert "traceback" in lines.lines[-1]


def test_frame_locals_never_reach_the_log() -> None:
    """The traceback is the plain text one: a secret held in a local is not written."""
    lines = _Lines()
    UnexpectedErrors(logger=lines).report(_raised("hunter2"), request_id="r", where="x")
    assert "hunter2" not in repr(lines.lines)


def test_a_failing_logger_does_not_fail_the_caller() -> None:
    """Reporting never raises, even when the logger does."""

    class Broken:
        def error(self, event: str, **fields: Any) -> None:
            raise OSError("disk full")

    UnexpectedErrors(logger=Broken()).report(_raised(), request_id=None)
