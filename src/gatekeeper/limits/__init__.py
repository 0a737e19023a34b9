"""Gatekeeper's rate-limit engine, usable as a library.

    from gatekeeper.limits import Limiter, Policy, storage_from_url

    limiter = Limiter(storage_from_url("redis://127.0.0.1:6379/0"))
    decision = await limiter.hit(Policy.parse("per-ip", "10/second"), "ip:203.0.113.7")

See ``docs/limits.md`` for the guide.
"""

from __future__ import annotations

from gatekeeper.limits.decision import Decision, PolicyResult
from gatekeeper.limits.dependency import (
    RateLimit,
    RateLimitHTTPException,
    rate_limit_exception_handler,
)
from gatekeeper.limits.headers import problem_body, rate_limit_headers, too_many_requests
from gatekeeper.limits.keys import (
    KeyFunc,
    RequestView,
    by_api_key,
    by_header,
    by_ip,
    by_user,
    client_ip,
    first_of,
)
from gatekeeper.limits.limiter import Limiter, LimiterStats
from gatekeeper.limits.middleware import RateLimitMiddleware, RouteLimit
from gatekeeper.limits.overlimit import OverLimitCache
from gatekeeper.limits.policy import Algorithm, Check, FailureMode, Policy, Rate, parse_rate
from gatekeeper.limits.resilience import Breaker, BreakerState
from gatekeeper.limits.storage import storage_from_url

__all__ = [
    "Algorithm",
    "Breaker",
    "BreakerState",
    "Check",
    "Decision",
    "FailureMode",
    "KeyFunc",
    "Limiter",
    "LimiterStats",
    "OverLimitCache",
    "Policy",
    "PolicyResult",
    "Rate",
    "RateLimit",
    "RateLimitHTTPException",
    "RateLimitMiddleware",
    "RequestView",
    "RouteLimit",
    "by_api_key",
    "by_header",
    "by_ip",
    "by_user",
    "client_ip",
    "first_of",
    "parse_rate",
    "problem_body",
    "rate_limit_exception_handler",
    "rate_limit_headers",
    "storage_from_url",
    "too_many_requests",
]
