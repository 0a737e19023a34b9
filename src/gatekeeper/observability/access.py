"""The access log: one line per request that says why it ended as it did.

The line has the shape of every other log line (``timestamp``, ``level``, ``event``, ``logger``,
JSON or console as configured by :func:`gatekeeper.observability.logging.configure`) but is
rendered here rather than through structlog's processor chain: that chain costs ~80x a counter
increment per call (measured by ``python -m bench observability``), which the request path cannot
afford. Lines are buffered and written in batches; the observability component flushes the
buffer twice a second and at shutdown.

``term`` is a two-letter termination code in the spirit of HAProxy's: the first letter says which
stage ended the request, the second how (see :class:`Termination` and docs/observability.md).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TextIO

__all__ = [
    "AccessEntry",
    "AccessLog",
    "AccessSink",
    "Output",
    "Termination",
    "configured_output",
]


class Termination(StrEnum):
    """Why a request ended as it did."""

    FORWARDED = "forwarded"
    CACHED = "cached"
    STALE = "stale"
    BUILTIN = "builtin"
    PREFLIGHT = "preflight"
    NO_ROUTE = "no_route"
    DENIED = "denied"
    UNAUTHENTICATED = "unauthenticated"
    LIMITED = "limited"
    WAITING_ROOM = "waiting_room"
    QUEUE_FULL = "queue_full"
    QUEUE_TIMEOUT = "queue_timeout"
    BREAKER_OPEN = "breaker_open"
    NO_UPSTREAM = "no_upstream"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_ABORT = "client_abort"
    INTERNAL = "internal"

    @property
    def code(self) -> str:
        """The two-letter code written in the access line's ``term`` field."""
        return _CODES[self]


_CODES: dict[Termination, str] = {
    Termination.FORWARDED: "--",
    Termination.CACHED: "C-",
    Termination.STALE: "CS",
    Termination.BUILTIN: "B-",
    Termination.PREFLIGHT: "BP",
    Termination.NO_ROUTE: "RN",
    Termination.DENIED: "RD",
    Termination.UNAUTHENTICATED: "RA",
    Termination.LIMITED: "RL",
    Termination.WAITING_ROOM: "RW",
    Termination.QUEUE_FULL: "QF",
    Termination.QUEUE_TIMEOUT: "QT",
    Termination.BREAKER_OPEN: "BO",
    Termination.NO_UPSTREAM: "UN",
    Termination.UPSTREAM_TIMEOUT: "UT",
    Termination.UPSTREAM_ERROR: "UC",
    Termination.CLIENT_ABORT: "CA",
    Termination.INTERNAL: "IE",
}

# Optional fields written only when set (None) or meaningful (attempts/bytes 0 are written).
_OPTIONAL = ("route", "upstream", "endpoint", "policy", "limit_key", "cache", "principal",
             "tenant", "detail")  # fmt: skip


@dataclass(slots=True)
class AccessEntry:
    """Everything the access line says about one request. Times are seconds.

    Leave ``termination`` as ``None`` to have it inferred from the other fields
    (:meth:`resolved_termination`); set it whenever the gateway knows better.
    """

    request_id: str
    method: str
    path: str
    client_ip: str
    status: int
    duration: float
    route: str | None = None
    termination: Termination | None = None
    upstream: str | None = None
    endpoint: str | None = None
    attempts: int = 0
    policy: str | None = None
    limit_key: str | None = None
    cache: str | None = None
    principal: str | None = None
    tenant: str | None = None
    bytes_sent: int = 0
    degraded: bool = False
    detail: str | None = None

    def resolved_termination(self) -> Termination:
        """The explicit termination, or the most likely one given status, cache and upstream."""
        if self.termination is not None:
            return self.termination
        if self.cache == "hit":
            return Termination.CACHED
        if self.cache == "stale":
            return Termination.STALE
        status = self.status
        if status == 429:
            return Termination.LIMITED
        if self.upstream is None:
            if status == 404 and self.route is None:
                return Termination.NO_ROUTE
            if status == 401:
                return Termination.UNAUTHENTICATED
            if status == 500:
                return Termination.INTERNAL
            return Termination.BUILTIN
        if status == 504:
            return Termination.UPSTREAM_TIMEOUT
        if status == 502:
            return Termination.UPSTREAM_ERROR
        return Termination.FORWARDED

    def as_fields(self) -> dict[str, Any]:
        """The fields of the log line: unset values dropped, ``duration_ms`` rounded."""
        term = self.resolved_termination()
        fields: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "client_ip": self.client_ip,
            "status": self.status,
            "duration_ms": round(self.duration * 1000, 3),
            "termination": term.value,
            "term": term.code,
            "attempts": self.attempts,
            "bytes_sent": self.bytes_sent,
        }
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        if self.degraded:
            fields["degraded"] = True
        return fields


AccessSink = Callable[[AccessEntry], None]


class _Timestamps:
    """ISO-8601 UTC timestamps like structlog's, formatting the date part once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"


class AccessLog:
    """Writes the access line of each request and hands the entry to live sinks (dashboards).

    The gateway builds one :class:`AccessEntry` per finished request and calls :meth:`emit`.
    ``stream``, ``fmt`` and ``enabled`` default to what ``logging.configure`` set up (stdout,
    JSON, on at level info or below). ``buffer_lines`` > 1 batches writes: call :meth:`flush`
    periodically and at shutdown. Sinks run synchronously and must be cheap; a failing sink is
    reported on stderr once and never fails the request.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool | None = None,
        fmt: str | None = None,
        buffer_lines: int = 1,
    ) -> None:
        output = _OUTPUT
        self.stream = stream  # None: what ``configure`` chose, looked up at each flush
        self.enabled = output.access_enabled if enabled is None else enabled
        self.fmt = fmt or output.fmt
        self.buffer_lines = max(1, buffer_lines)
        self._sinks: list[AccessSink] = []
        self._buffer: list[str] = []
        self._stamp = _Timestamps()
        self._sink_failed = False

    def add_sink(self, sink: AccessSink) -> None:
        """Also deliver every entry to ``sink`` (e.g. the dashboard's live statistics)."""
        self._sinks.append(sink)

    def remove_sink(self, sink: AccessSink) -> None:
        """Stop delivering entries to ``sink``."""
        if sink in self._sinks:
            self._sinks.remove(sink)

    def emit(self, entry: AccessEntry, *, to_sinks: bool = True) -> None:
        """Log one finished request (``to_sinks=False``: the line only, as for the gateway's
        built-in endpoints, which the live statistics do not count as traffic)."""
        if not to_sinks:
            if self.enabled:
                self._buffer.append(self.render(entry))
                if len(self._buffer) >= self.buffer_lines:
                    self.flush()
            return
        for sink in self._sinks:
            try:
                sink(entry)
            except Exception as exc:  # a dashboard bug must never fail the request it observes
                self._report_sink_failure(sink, exc)
        if self.enabled:
            self._buffer.append(self.render(entry))
            if len(self._buffer) >= self.buffer_lines:
                self.flush()

    def render(self, entry: AccessEntry) -> str:
        """One line (without the newline) in the configured format."""
        stamp = self._stamp(time.time())
        if self.fmt == "json":
            return _json_line(entry, stamp)
        text = " ".join(f"{k}={v}" for k, v in entry.as_fields().items())
        return f"{stamp} [info     ] access {text}"

    def flush(self) -> None:
        """Write the buffered lines."""
        if not self._buffer:
            return
        lines, self._buffer = self._buffer, []
        stream = self.stream or _default_stream()
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stdout must not fail requests
            pass

    def _report_sink_failure(self, sink: AccessSink, exc: Exception) -> None:
        if not self._sink_failed:
            self._sink_failed = True
            print(f"gatekeeper: access sink {sink!r} failed: {exc!r}", file=sys.stderr)


# The C string escaper json.dumps uses, called directly: building the object by hand saves the
# encoder's per-call set-up, which is most of the cost for a line of ~15 short fields.
_esc: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _json_line(entry: AccessEntry, stamp: str) -> str:
    term = entry.resolved_termination()
    parts = [
        '{"event":"access","logger":"access","level":"info","timestamp":"',
        stamp,
        '","request_id":',
        _esc(entry.request_id),
        ',"method":',
        _esc(entry.method),
        ',"path":',
        _esc(entry.path),
        ',"client_ip":',
        _esc(entry.client_ip),
        f',"status":{int(entry.status)},"duration_ms":{round(entry.duration * 1000, 3)!r}',
        f',"termination":"{term.value}","term":"{term.code}"',
        f',"attempts":{int(entry.attempts)},"bytes_sent":{int(entry.bytes_sent)}',
    ]
    for name in _OPTIONAL:
        value = getattr(entry, name)
        if value is not None:
            parts.append(f',"{name}":')
            parts.append(_esc(str(value)))
    if entry.degraded:
        parts.append(',"degraded":true')
    parts.append("}")
    return "".join(parts)


@dataclass
class Output:
    """Where and how ``observability.logging.configure`` said lines go (read by the access
    log)."""

    stream: TextIO | None = None
    fmt: str = "json"
    access_enabled: bool = True


# structlog's own configuration is process-wide too; this records the part the access log reads.
_OUTPUT = Output()


def configured_output() -> Output:
    """The output chosen by the last ``configure`` call (stdout and JSON before any)."""
    return _OUTPUT


def _default_stream() -> TextIO:
    return _OUTPUT.stream or sys.stdout
