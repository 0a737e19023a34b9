"""The flagged clients over HTTP.

=================================== ==============================================================
``GET /admin/abuse/flagged``        the flagged clients, the patterns and the detector's counters
``DELETE /admin/abuse/flagged``     clear one flag (``?pattern=...&subject=...``); 404 if absent
``GET /dashboard/abuse``            the dashboard panel's feed: the flagged clients (operators)
=================================== ==============================================================

Clearing a flag lifts no ban (``POST /admin/unban`` does); the subject is flagged again, with a
new event, if it keeps going. With the identity component, clearing is written to its audit log
(action ``abuse.clear``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gatekeeper.abuse.detector import Detector
from gatekeeper.abuse.patterns import PATTERNS
from gatekeeper.endpoints import (
    Answer,
    Call,
    Endpoint,
    Guard,
    Reply,
    Routes,
    json_reply,
    problem,
    problem_reply,
    query,
)

__all__ = ["Audit", "abuse_endpoints"]

# The identity's ``AuditLog.record``: (actor, action, target, ip, **detail).
Audit = Callable[..., Awaitable[None]]

_ENTRY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pattern": {"type": "string"},
        "subject": {"type": "string"},
        "type": {"type": "string"},
        "count": {"type": "integer"},
        "threshold": {"type": "integer"},
        "window": {"type": "number"},
        "first_seen": {"type": "number"},
        "last_seen": {"type": "number"},
        "expires_at": {"type": "number"},
        "banned_for": {"type": "number"},
    },
}
_LIST: dict[str, Any] = {
    "type": "object",
    "properties": {
        "enabled": {"type": "boolean"},
        "flagged": {"type": "array", "items": _ENTRY},
    },
}
_PATTERN = query("pattern", str, choices=PATTERNS, description="only this pattern")


def abuse_endpoints(
    detector: Detector | None, admin: Guard, operator: Guard, audit: Audit | None = None
) -> list[Endpoint]:
    """The endpoints, bound to ``detector`` (None: detection is disabled, the list is empty);
    ``audit`` records who cleared what."""
    routes = Routes(tags=("abuse",), guard=admin)

    async def flagged(pattern: str | None) -> list[dict[str, Any]]:
        if detector is None:
            return []
        entries = await detector.flags.entries()
        return [e for e in entries if pattern is None or e["pattern"] == pattern]

    @routes.get(
        "/admin/abuse/flagged",
        params=(_PATTERN,),
        responses={200: Answer("The flagged clients and the detector.", _LIST)},
    )
    async def list_flagged(call: Call) -> Reply:
        """The flagged clients, the most recent first."""
        body: dict[str, Any] = {
            "enabled": detector is not None,
            "flagged": await flagged(call.params["pattern"]),
        }
        if detector is not None:
            body.update(detector.snapshot_of())
        return json_reply(body)

    @routes.delete(
        "/admin/abuse/flagged",
        params=(
            query("pattern", str, required=True, choices=PATTERNS),
            query("subject", str, required=True, min_length=3, max_length=400),
        ),
        responses={
            200: Answer("Cleared.", {"type": "object"}),
            404: problem("The subject is not flagged for that pattern."),
        },
    )
    async def clear_flag(call: Call) -> Reply:
        """Clear one flag (bans stay: see ``POST /admin/unban``)."""
        pattern, subject = call.params["pattern"], call.params["subject"]
        if detector is None or not await detector.clear(pattern, subject):
            return problem_reply(404, "not_found", f"{subject!r} is not flagged for {pattern!r}")
        if audit is not None:
            actor = str(getattr(call.principal, "actor", call.principal))
            await audit(actor, "abuse.clear", subject, call.client_ip, pattern=pattern)
        return json_reply({"pattern": pattern, "subject": subject, "cleared": True})

    @routes.get(
        "/dashboard/abuse",
        guard=operator,
        summary="The flagged clients (the dashboard's panel)",
        responses={200: Answer("The flagged clients.", _LIST)},
    )
    async def dashboard_flagged(call: Call) -> Reply:
        body = {"enabled": detector is not None, "flagged": await flagged(None)}
        return json_reply(body, headers=[(b"cache-control", b"no-store")])

    return list(routes)
