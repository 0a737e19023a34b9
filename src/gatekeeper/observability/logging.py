"""Structured logs: one JSON object per line, a request id on every line, one access line per
request that says why it ended as it did.

``configure(settings)`` is called once at the edge (the CLI, the app factory). Every log line of
a request carries its ``request_id``: taken from the client's ``X-Request-ID`` when it is sane,
generated otherwise, sent on to the upstream and echoed in the response
(:class:`RequestIdMiddleware`, :func:`request_id_of`).

The access line itself (:class:`AccessLog`, :class:`AccessEntry`, :class:`Termination`) lives in
``gatekeeper.observability.access`` and is re-exported here.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import re
import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from gatekeeper.observability.access import (
    _OUTPUT,
    AccessEntry,
    AccessLog,
    Termination,
    configured_output,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from gatekeeper.settings import Settings

__all__ = [
    "REQUEST_ID_HEADER",
    "REQUEST_ID_VAR",
    "AccessEntry",
    "AccessLog",
    "RequestIdMiddleware",
    "Termination",
    "accept_request_id",
    "configure",
    "configured_output",
    "get_logger",
    "new_request_id",
    "request_id_of",
]

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER_LOWER = b"x-request-id"
# A client's id is kept only if it is short and plain: it ends up in logs and upstream headers.
_SANE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


# -- request ids -----------------------------------------------------------------------------


class _Ids:
    """A random 64-bit prefix per process (new in a forked child) and a counter."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = f"{random.getrandbits(64):016x}"
        self.count = itertools.count(random.getrandbits(32))


_IDS = _Ids()


def new_request_id() -> str:
    """A fresh request id (32 hex characters).

    Unique, not unguessable: an id only ties log lines together. So it is this process's
    random prefix and a counter rather than ``os.urandom`` (a ``getrandom`` system call, a
    sixth of a native handler's answer) or 128 fresh random bits (three times the cost).
    """
    ids = _IDS
    return f"{ids.prefix}{next(ids.count) & 0xFFFFFFFFFFFFFFFF:016x}"


def accept_request_id(value: str | bytes | None) -> str:
    """The client's id if it is sane (<= 128 plain characters), else a new one."""
    if value:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if _SANE_ID.fullmatch(text):
            return text
    return new_request_id()


def _request_id_var() -> ContextVar[Any]:
    """The context variable behind structlog's bound ``request_id`` (read off the token that
    binding returns), so that a request can set and reset it directly: structlog's
    bind/reset pair costs about 1 us a request, the variable's own set/reset a tenth."""
    tokens = structlog.contextvars.bind_contextvars(request_id=None)
    structlog.contextvars.reset_contextvars(**tokens)
    return tokens["request_id"].var


# Set it (and reset it with the token ``set`` returns) to bind a request id to the log lines
# written meanwhile, as ``bind_contextvars(request_id=...)`` would.
REQUEST_ID_VAR = _request_id_var()


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


# -- configuration ----------------------------------------------------------------------------


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
    _OUTPUT.stream = out
    _OUTPUT.fmt = settings.log_format
    _OUTPUT.access_enabled = level <= logging.INFO
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
