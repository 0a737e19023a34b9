"""The access line of a request through the gateway, and the id that ties its lines together.

The gateway's request path calls :func:`ensure_request_id` when a request arrives (so that the
upstream receives the same ``X-Request-ID`` the access line carries and the answer echoes), and
:func:`log_proxied` or :func:`log_builtin` when it leaves, with what it learnt on the way: the
limiter's decision and the :class:`Termination` when the gateway itself ended the request
(waiting room, queue, breaker, upstream errors).
"""

from __future__ import annotations

import logging
from typing import Any

from gatekeeper.observability.access import AccessEntry, AccessLog, Termination
from gatekeeper.observability.logging import accept_request_id, new_request_id

__all__ = ["ensure_request_id", "log_builtin", "log_proxied"]

_HEADER = b"x-request-id"
# Terminations decided before an upstream answered: the line names no upstream for them.
_LOCAL = frozenset(
    {Termination.LIMITED, Termination.WAITING_ROOM, Termination.QUEUE_FULL,
     Termination.QUEUE_TIMEOUT, Termination.NO_UPSTREAM, Termination.BREAKER_OPEN}
)  # fmt: skip


def ensure_request_id(request: Any) -> str:
    """The request's id: its own ``X-Request-ID`` if sane, else a new one put in its headers
    (replacing an insane one), so that the upstream sees it."""
    given = request.header(_HEADER)
    if given is None:
        raw = new_request_id()
        request.headers.append((_HEADER, raw.encode()))
        return raw
    rid = accept_request_id(given)
    if given.decode("latin-1") != rid:
        request.headers = [h for h in request.headers if h[0] != _HEADER]
        request.headers.append((_HEADER, rid.encode("latin-1")))
    return rid


def log_proxied(
    access: AccessLog,
    request: Any,
    route: Any,
    status: int,
    seconds: float,
    *,
    request_id: str,
    term: Termination | None = None,
    decision: Any = None,
    limit_key: str | None = None,
) -> None:
    """Emit the access line of a request that matched ``route``: ``decision`` is the limiter's
    (its denied policy and ``limit_key`` name what limited the request), ``term`` what the
    gateway itself ended the request with, if anything."""
    policy = None
    degraded = False
    if decision is not None:
        degraded = bool(decision.degraded)
        if not decision.allowed:
            term = Termination.LIMITED
            policy = decision.policy
        else:
            limit_key = None
    rid = request_id
    access.emit(
        AccessEntry(
            request_id=rid,
            method=request.method,
            path=request.path,
            client_ip=request.client_ip,
            status=status,
            duration=seconds,
            route=route.name,
            termination=term,
            upstream=None if term in _LOCAL or status == 429 else route.upstream,
            policy=policy,
            limit_key=limit_key,
            degraded=degraded,
        )
    )


def log_builtin(
    access: AccessLog, request: Any, request_id: str, status: int, seconds: float
) -> None:
    """Write the access line of a request no route took (a built-in endpoint, or 404). The
    line only: the live statistics and dashboards count the traffic through routes."""
    try:
        access.emit(
            AccessEntry(
                request_id=request_id,
                method=request.method,
                path=request.path,
                client_ip=request.client_ip,
                status=status,
                duration=seconds,
            ),
            to_sinks=False,
        )
    except Exception:  # observability must never fail serving
        logging.getLogger("gatekeeper.gateway").exception("access line of a built-in request")
