"""What an unexpected exception costs: one log line, and a traceback at most once a minute.

A bug that fails every request must not flood the log (a full traceback with frame locals per
request wrote 1,929 lines in 7 s on one replica). :func:`report_unexpected` writes exactly one
line per occurrence, with the request id and the exception; the first occurrence at an error
site (the innermost frame of the traceback) in each minute carries the traceback as text in
that same line, and how many occurrences there were since the last one (``suppressed``). No
frame locals, ever: they may hold secrets.

This module imports only the standard library and structlog, so that every edge (the gateway,
the built-in endpoints) reports the same way.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

import structlog

__all__ = ["UnexpectedErrors", "report_unexpected"]

_log = structlog.get_logger("gatekeeper.unexpected")


def _site(exc: BaseException) -> tuple[str, int, str]:
    """Where ``exc`` was raised: the innermost frame of its traceback."""
    tb = exc.__traceback__
    if tb is None:
        return ("?", 0, type(exc).__name__)
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return (code.co_filename, tb.tb_lineno, type(exc).__name__)


class UnexpectedErrors:
    """Reports unexpected exceptions, one line each, tracebacks rate-limited per site."""

    def __init__(
        self,
        *,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        logger: Any = None,
        max_sites: int = 1024,
    ) -> None:
        self.every = every
        self.clock = clock
        self.logger = logger if logger is not None else _log
        self.max_sites = max_sites
        self._last: dict[tuple[str, int, str], float] = {}
        self._held: dict[tuple[str, int, str], int] = {}

    def report(self, exc: BaseException, *, request_id: str | None = None, where: str = "") -> None:
        """Write the one line for ``exc`` (with its traceback if the site's minute is new)."""
        site = _site(exc)
        now = self.clock()
        last = self._last.get(site)
        fields: dict[str, Any] = {
            "request_id": request_id or None,
            "error": f"{type(exc).__name__}: {exc}"[:500],
            "site": f"{site[0]}:{site[1]}",
        }
        if where:
            fields["where"] = where
        if last is None or now - last >= self.every:
            if len(self._last) >= self.max_sites:
                self._last.clear()
                self._held.clear()
            self._last[site] = now
            fields["traceback"] = "".join(traceback.format_exception(exc))
            held = self._held.pop(site, 0)
            if held:
                fields["suppressed"] = held  # occurrences since the last traceback
        else:
            self._held[site] = self._held.get(site, 0) + 1
        try:
            self.logger.error("unexpected_error", **fields)
        except Exception:  # reporting must never fail the answer
            pass


_DEFAULT = UnexpectedErrors()


def report_unexpected(
    exc: BaseException, *, request_id: str | None = None, where: str = ""
) -> None:
    """Report ``exc`` with the process's reporter (see :class:`UnexpectedErrors`)."""
    _DEFAULT.report(exc, request_id=request_id, where=where)
