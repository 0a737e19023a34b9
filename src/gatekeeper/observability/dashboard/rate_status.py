"""``GET /api/v1/rate-status``: the caller's standing against the limits of a route (seed 003).

The answer is computed with :meth:`Limiter.peek`, which debits nothing: asking for one's status
never costs a request. The route and its limit subjects are those the gateway would use for a
request to ``path`` from this client.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gatekeeper.endpoints import Call

__all__ = ["rate_status"]


def _subject(kind: str, call: Call, client_ip: str) -> tuple[str, str]:
    """The limiter key the gateway uses for ``kind``, and how to show it (secrets hashed)."""
    if kind == "global":
        return "global", "global"
    if kind == "api_key":
        value = call.header_text("x-api-key") or call.query_value("api_key")
        if value:
            shown = "key:" + hashlib.sha256(value.encode()).hexdigest()[:12]
            return "key:" + value, shown
    elif kind.startswith(("header:", "query:")):
        source, _, name = kind.partition(":")
        found = call.header_text(name) if source == "header" else call.query_value(name)
        if found:
            return f"{source}:{name}:{found}", f"{source}:{name}"
    return "ip:" + client_ip, "ip:" + client_ip


async def rate_status(
    call: Call, path: str, client_ip: str, gateway: Any, limiter: Any
) -> dict[str, Any]:
    """The status body for ``path``; ``route`` is ``None`` when no route matches it."""
    body: dict[str, Any] = {"client_ip": client_ip, "path": path, "route": None, "limits": []}
    router = getattr(gateway, "router", None)
    route = router.match(call.header_text("host") or "", path, "GET") if router else None
    if route is None or limiter is None:
        body["limited"] = False
        return body
    body["route"] = route.name
    limits = []
    for rule in route.limits:
        policy = rule.policy
        key, shown = _subject(rule.key, call, client_ip)
        decision = await limiter.peek(policy, key)
        result = decision.binding
        limits.append(
            {
                "policy": policy.name,
                "algorithm": str(policy.algorithm),
                "subject": shown,
                "limit": result.limit,
                "remaining": result.remaining,
                "window_seconds": policy.rate.period,
                "reset_in": round(result.reset_after, 3),
                "retry_after": round(result.retry_after, 3),
                "allowed": result.allowed,
                "degraded": decision.degraded,
            }
        )
    body["limits"] = limits
    body["limited"] = any(not item["allowed"] for item in limits)
    if limits:
        # The seed's flat fields, taken from the tightest limit.
        tightest = min(limits, key=lambda item: (item["remaining"], item["limit"]))
        for field in ("limit", "remaining", "window_seconds", "reset_in", "retry_after"):
            body[field] = tightest[field]
    return body
