"""``GET /api/v1/rate-status``: the caller's standing against the limits of a route (seed 003).

The answer is computed with :meth:`Limiter.peek`, which debits nothing: asking for one's status
never costs a request. The route and its limit subjects are those the gateway would use for a
request to ``path`` from this client (the gateway's own subject rule,
:func:`gatekeeper.gateway.flow.subjects.subject_key`, composite keys included).
"""

from __future__ import annotations

from typing import Any

from gatekeeper.endpoints import Call
from gatekeeper.gateway.flow.subjects import shown_subject, subject_key

__all__ = ["rate_status"]


class _Asked:
    """The request the caller asks about, as the subject rule reads a request: its headers
    and query are the status call's own, its path the one asked for."""

    __slots__ = ("call", "client_ip", "method", "path", "route", "target")

    def __init__(self, call: Call, path: str, client_ip: str, route: Any) -> None:
        self.call = call
        self.client_ip = client_ip
        self.path = path
        self.method = "GET"
        self.route = route
        query = call.query_string
        self.target = path.encode("latin-1", "replace") + (b"?" + query if query else b"")

    def header(self, name: bytes) -> bytes | None:
        return self.call.header(name)


async def rate_status(
    call: Call, path: str, client_ip: str, gateway: Any, limiter: Any
) -> dict[str, Any]:
    """The status body for ``path``; ``route`` is ``None`` when no route matches it."""
    body: dict[str, Any] = {"client_ip": client_ip, "path": path, "route": None, "limits": []}
    router = getattr(gateway, "router", None)
    route = router.match(call.header_text("host") or "", path, "GET") if router else None
    if route is None or limiter is None:
        body["limited"] = body["blocked"] = False
        return body
    body["route"] = route.name
    asked = _Asked(call, path, client_ip, route)
    limits = []
    for rule in route.limits:
        policy = rule.policy
        key = subject_key(rule.key, asked)
        decision = await limiter.peek(policy, key)
        result = decision.binding
        limits.append(
            {
                "policy": policy.name,
                "algorithm": str(policy.algorithm),
                "subject": shown_subject(route, asked, policy.name),
                "limit": result.limit,
                "remaining": result.remaining,
                "current_count": max(0, result.limit - result.remaining),
                "window_seconds": policy.rate.period,
                "reset_in": round(result.reset_after, 3),
                "ttl_seconds": round(result.reset_after, 3),
                "retry_after": round(result.retry_after, 3),
                "allowed": result.allowed,
                "degraded": decision.degraded,
            }
        )
    body["limits"] = limits
    body["limited"] = body["blocked"] = any(not item["allowed"] for item in limits)
    if limits:
        # The seed's flat fields, taken from the tightest limit.
        tightest = min(limits, key=lambda item: (item["remaining"], item["limit"]))
        fields = ("limit", "remaining", "current_count", "window_seconds", "reset_in")
        for field in (*fields, "ttl_seconds", "retry_after"):
            body[field] = tightest[field]
    return body
