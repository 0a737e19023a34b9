"""What an unexpected error costs: one log line, and a traceback now and then.

A bug that fails every request must not drown the logs (a stack trace with frame locals per
request wrote 1,929 lines in 7 s on one replica) nor hide: each occurrence is one line naming
the request id, where it happened and the exception; the full traceback is added at most once
per ``interval`` seconds per site (the function and line that raised), with the number of
occurrences since the last one.
"""

from __future__ import annotations

import logging
import time
import traceback

__all__ = ["UnexpectedErrors", "report_unexpected"]

_logger = logging.getLogger("gatekeeper.errors")


class UnexpectedErrors:
    """Reports unexpected exceptions, a traceback per site at most every ``interval`` s."""

    def __init__(self, interval: float = 60.0, clock: object = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def report(self, exc: BaseException, *, request_id: str = "", where: str = "") -> None:
        """Log ``exc`` as one line; with its traceback if this site's is due."""
        site = _site(exc)
        now = self._clock()  # type: ignore[operator]
        last = self._last.get(site)
        serving = f" serving {where}" if where else ""
        request = f" (request {request_id})" if request_id else ""
        message = f"unexpected error{serving}{request} at {site}: {type(exc).__name__}: {exc}"
        if last is not None and now - last < self.interval:
            self._since[site] = self._since.get(site, 0) + 1
            _logger.error(message)
            return
        self._last[site] = now
        repeated = self._since.pop(site, 0)
        if len(self._last) > 1024:  # bounded: sites are few, but never let a bug grow this
            self._last = {site: now}
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        suffix = f" ({repeated} more since the last traceback)" if repeated else ""
        _logger.error("%s%s\n%s", message, suffix, trace.rstrip())


def _site(exc: BaseException) -> str:
    """``module:function:line`` of the innermost frame that raised ``exc``."""
    tb = exc.__traceback__
    if tb is None:
        return type(exc).__name__
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{tb.tb_frame.f_globals.get('__name__', '?')}:{code.co_name}:{tb.tb_lineno}"


_DEFAULT = UnexpectedErrors()


def report_unexpected(exc: BaseException, *, request_id: str = "", where: str = "") -> None:
    """Report ``exc`` through the process's :class:`UnexpectedErrors`."""
    _DEFAULT.report(exc, request_id=request_id, where=where)
