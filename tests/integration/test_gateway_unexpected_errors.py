"""A bug on the request path costs each request one JSON 500 and one log line; its traceback
is written at most once a minute per place it was raised (issue 14: 1,929 lines in 7 s)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gatekeeper.gateway.flow import steps
from gatekeeper.observability import unexpected
from tests.integration.gateway_fixtures import backends, config_for, running_gateway


class _Lines:
    """A logger keeping what the reporter writes (one structured line per call)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


async def test_a_failing_step_answers_one_problem_and_logs_one_line_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fifty requests through a step that raises: fifty 500 problems with the request id,
    fifty one-line log records naming it, one traceback; the gateway keeps serving."""

    def broken(self: steps.Limit, ex: object) -> None:
        raise RuntimeError("the limit step is broken")

    monkeypatch.setattr(steps.Limit, "enter", broken)
    log = _Lines()
    monkeypatch.setattr(unexpected, "_DEFAULT", unexpected.UnexpectedErrors(every=60, logger=log))
    async with backends(1) as bs:
        data = config_for(
            [bs[0].url],
            policies={"p": {"rate": "100/second"}},
            routes=[
                {"name": "api", "path_prefix": "/api", "upstream": "backends", "limits": ["p"]},
                {"name": "open", "path_prefix": "/open", "upstream": "backends"},
            ],
        )
        async with running_gateway(data) as gw, httpx.AsyncClient(base_url=gw.url) as http:
            answers = [await http.get("/api/x") for _ in range(50)]
            healthy = await http.get("/open/x")
    assert {a.status_code for a in answers} == {500}
    assert {a.json()["error"] for a in answers} == {"internal_error"}
    assert all(a.headers["content-type"] == "application/problem+json" for a in answers)
    assert "broken" not in answers[0].text  # the exception's text stays in the log
    assert healthy.status_code == 200
    records = log.lines
    assert len(records) == 50
    ids = [a.headers["x-request-id"] for a in answers]
    assert [record["request_id"] for record in records] == ids
    assert all("the limit step is broken" in record["error"] for record in records)
    with_trace = [r for r in records if "traceback" in r]
    assert len(with_trace) == 1
    assert "Traceback" in with_trace[0]["traceback"]
    assert all("\n" not in str(v) for r in records if r not in with_trace for v in r.values())


def test_the_traceback_comes_back_after_the_interval_with_a_count() -> None:
    """Per site, a traceback again once the interval passed, saying how many were held."""
    now = [0.0]
    log = _Lines()
    reporter = unexpected.UnexpectedErrors(every=60, clock=lambda: now[0], logger=log)
    for second in (0, 1, 2, 30, 61):
        now[0] = second
        try:
            raise ValueError("bad")
        except ValueError as exc:
            reporter.report(exc, request_id=f"r{second}")
    lines = log.lines
    traces = [line for line in lines if "traceback" in line]
    assert len(lines) == 5
    assert len(traces) == 2
    assert traces[1]["suppressed"] == 3  # the three held back since the last traceback
    assert "suppressed" not in traces[0]
