"""The request id is bound to log lines through structlog's own context variable."""

from __future__ import annotations

import structlog

from gatekeeper.observability.logging import REQUEST_ID_VAR


def test_the_request_id_variable_is_the_one_structlog_merges() -> None:
    """Setting the variable directly is what bind_contextvars(request_id=...) would do:
    log lines merge it, and resetting it leaves the context as it was."""
    assert "request_id" not in structlog.contextvars.get_contextvars()
    token = REQUEST_ID_VAR.set("abc123")
    try:
        assert structlog.contextvars.get_contextvars()["request_id"] == "abc123"
        merged = structlog.contextvars.merge_contextvars(None, "info", {"event": "x"})
        assert merged["request_id"] == "abc123"
    finally:
        REQUEST_ID_VAR.reset(token)
    assert "request_id" not in structlog.contextvars.get_contextvars()
