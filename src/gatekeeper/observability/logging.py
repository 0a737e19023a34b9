"""Structured logs: one JSON object per line, a request id on every line, one access line per
request that says why it ended as it did.

``configure(settings)`` is called once at the edge (the CLI, the app factory). Every log line of
a request carries its ``request_id``: taken from the client's ``X-Request-ID`` when it is sane,
generated otherwise, sent on to the upstream and echoed in the response
(:class:`RequestIdMiddleware`, :func:`request_id_of`).

The access line's ``term`` is a two-letter termination code in the spirit of HAProxy's: the first
letter says which stage ended the request, the second how. ``--`` is the normal case (forwarded,
answered by the upstream):

==== ================= =====================================================================
code reason            meaning
==== ================= =====================================================================
--   forwarded         the upstream answered (any status it chose)
C-   cached            served from the cache, upstream not contacted
CS   stale             served stale from the cache because the upstream failed
B-   builtin           answered by a built-in API (/queue, /auth, /admin, /metrics, ...)
RN   no_route          no route matches (404)
RD   denied            deny list or ban (403)
RA   unauthenticated   missing or wrong credentials (401/403)
RL   limited           a rate-limit policy denied it (429); ``policy`` names which
RW   waiting_room      sent to the waiting room instead of the upstream
QF   queue_full        the admission queue was full (503)
QT   queue_timeout     waited in the admission queue past its timeout (503)
BO   breaker_open      every candidate endpoint's circuit breaker was open (503)
UN   no_upstream       no healthy endpoint in the pool (503)
UT   upstream_timeout  the upstream did not answer in time (504), after ``attempts`` tries
UC   upstream_error    the upstream refused or reset the connection (502)
CA   client_abort      the client went away before the response was sent
IE   internal          Gatekeeper failed (500): a bug, see the error line with this request id
==== ================= =====================================================================
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TextIO

import structlog

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from gatekeeper.settings import Settings

__all__ = [
    "REQUEST_ID_HEADER",
    "AccessEntry",
    "AccessLog",
    "RequestIdMiddleware",
    "Termination",
    "accept_request_id",
    "configure",
    "get_logger",
    "new_request_id",
    "request_id_of",
]

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER_LOWER = b"x-request-id"
# A client's id is kept only if it is short and plain: it ends up in logs and upstream headers.
_SANE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class Termination(StrEnum):
    """Why a request ended as it did (see the module docstring for the codes)."""

    FORWARDED = "forwarded"
    CACHED = "cached"
    STALE = "stale"
    BUILTIN = "builtin"
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


# -- request ids -----------------------------------------------------------------------------


def new_request_id() -> str:
    """A fresh, unguessable request id (32 hex characters)."""
    return uuid.uuid4().hex


def accept_request_id(value: str | bytes | None) -> str:
    """The client's id if it is sane (<= 128 plain characters), else a new one."""
    if value:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if _SANE_ID.fullmatch(text):
            return text
    return new_request_id()


def request_id_of(scope: Scope) -> str:
    """The request id of an ASGI request, decided once and remembered in ``scope["state"]``.

    The gateway sends it upstream as ``X-Request-ID``; every log line of the request carries it.
    """
    state = scope.setdefault("state", {})
    found = state.get("request_id")
    if isinstance(found, str):
        return found
    incoming = None
    for name, value in scope.get("headers", ()):
        if name == _HEADER_LOWER:
            incoming = value
            break
    rid = state["request_id"] = accept_request_id(incoming)
    return rid


class RequestIdMiddleware:
    """Pure ASGI: give each HTTP request an id, bind it to its log lines, echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        header = (_HEADER_LOWER, rid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != _HEADER_LOWER]
                message["headers"] = [*headers, header]
            await send(message)

        # Each request runs in its own task, so the binding does not leak to other requests.
        with structlog.contextvars.bound_contextvars(request_id=rid):
            await self.app(scope, receive, send_with_id)


# -- configuration ---------------------------------------------------------------------------


def _logger_field(_: Any, __: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    # structlog reserves the ``logger`` keyword, so named loggers bind ``logger_name``; write it
    # under the same key the standard library's loggers use.
    name = event.pop("logger_name", None)
    if name is not None:
        event["logger"] = name
    return event


def configure(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library's logging for this process.

    ``settings.log_format`` is ``json`` (one object per line, for machines) or ``console``;
    ``settings.log_level`` filters both structlog and library loggers (uvicorn, alembic, ...),
    which are rendered the same way so that one process writes one format.
    """
    out = stream if stream is not None else sys.stdout
    level = getattr(logging, settings.log_level.upper())
    shared: list[structlog.types.Processor] = [
        _logger_field,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.dict_tracebacks)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_gatekeeper", False)]:
        root.removeHandler(old)
    handler._gatekeeper = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger (``name`` ends up in the ``logger`` field)."""
    return structlog.get_logger() if name is None else structlog.get_logger(logger_name=name)


# -- the access log --------------------------------------------------------------------------


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
        """The fields of the log line: ``None`` values dropped, ``duration_ms`` rounded."""
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        term = self.resolved_termination()
        fields["termination"] = term.value
        fields["term"] = term.code
        fields["duration_ms"] = round(fields.pop("duration") * 1000, 3)
        if not self.degraded:
            fields.pop("degraded")
        return fields


AccessSink = Callable[[AccessEntry], None]


class AccessLog:
    """Writes the access line of each request and hands the entry to live sinks (dashboard).

    The gateway builds one :class:`AccessEntry` per finished request and calls :meth:`emit`.
    Sinks are called synchronously and must be cheap (append to a buffer); a failing sink is
    logged and does not fail the request.
    """

    def __init__(self, logger: Any = None, *, enabled: bool = True) -> None:
        self._logger = logger if logger is not None else get_logger("access")
        self.enabled = enabled
        self._sinks: list[AccessSink] = []

    def add_sink(self, sink: AccessSink) -> None:
        """Also deliver every entry to ``sink`` (e.g. the dashboard's live window)."""
        self._sinks.append(sink)

    def remove_sink(self, sink: AccessSink) -> None:
        """Stop delivering entries to ``sink``."""
        if sink in self._sinks:
            self._sinks.remove(sink)

    def emit(self, entry: AccessEntry) -> None:
        """Log one finished request."""
        for sink in self._sinks:
            try:
                sink(entry)
            except Exception:  # a dashboard bug must never fail the request it observes
                self._logger.exception("access sink failed", sink=repr(sink))
        if self.enabled:
            self._logger.info("access", **entry.as_fields())
