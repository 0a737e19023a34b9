"""Rate limiting as a FastAPI dependency::

    per_ip = RateLimit(limiter, Policy.parse("per-ip", "10/second"))

    @app.get("/items", dependencies=[Depends(per_ip)])
    async def items() -> list[str]: ...

An admitted request gets the ``RateLimit`` fields on its response; a denied one raises
:class:`RateLimitHTTPException` (a 429 with ``Retry-After`` and the rate-limit fields). FastAPI's
default handler renders its detail as ``{"detail": {...}}``; install
:func:`rate_limit_exception_handler` to send the RFC 9457 problem document instead::

    app.add_exception_handler(RateLimitHTTPException, rate_limit_exception_handler)
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fastapi import HTTPException, Request, Response

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.decision import Decision
from gatekeeper.limits.headers import (
    PROBLEM_CONTENT_TYPE,
    problem_body,
    rate_limit_headers,
)
from gatekeeper.limits.keys import KeyFunc, RequestView, by_ip, client_ip, parse_trusted_proxies
from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.policy import Algorithm, Check, Policy

__all__ = ["RateLimit", "RateLimitHTTPException", "rate_limit_exception_handler"]


class RateLimitHTTPException(HTTPException):
    """A 429 raised by :class:`RateLimit`; ``decision`` says which policy and until when."""

    def __init__(self, decision: Decision, headers: dict[str, str], body: bytes) -> None:
        super().__init__(status_code=429, detail=json.loads(body), headers=headers)
        self.decision = decision
        self.body = body


class RateLimit:
    """A dependency deciding ``policies`` for the request's subject (``key``, default: IP).

    It returns the :class:`~gatekeeper.limits.decision.Decision`, so an endpoint may take it as
    a parameter (``decision: Decision = Depends(per_ip)``). Concurrency policies are not
    supported here (a dependency cannot hold a lease across the response): use the middleware
    or :meth:`Limiter.lease`.
    """

    def __init__(
        self,
        limiter: Limiter,
        policies: Policy | Sequence[Policy],
        *,
        key: KeyFunc = by_ip,
        cost: int = 1,
        trusted_proxies: Sequence[str] = (),
        legacy_headers: bool = False,
    ) -> None:
        self.limiter = limiter
        self.policies = (policies,) if isinstance(policies, Policy) else tuple(policies)
        if not self.policies:
            raise ConfigurationError("RateLimit needs at least one policy")
        for policy in self.policies:
            if policy.algorithm is Algorithm.CONCURRENCY:
                raise ConfigurationError(
                    f"policy {policy.name!r}: concurrency limits need the middleware or "
                    "Limiter.lease(), not a dependency"
                )
        self.key = key
        self.cost = cost
        self.trusted_proxies = parse_trusted_proxies(trusted_proxies)
        self.legacy_headers = legacy_headers
        self._by_name = {p.name: p for p in self.policies}

    async def __call__(self, request: Request, response: Response) -> Decision:
        view = RequestView(request.scope, client_ip(request.scope, self.trusted_proxies))
        subject = self.key(view)
        if subject is not None and not isinstance(subject, str):
            subject = await subject
        if not subject:
            return Decision(True, ())
        checks = [Check(policy, subject, self.cost) for policy in self.policies]
        decision = await self.limiter.decide(checks)
        headers = rate_limit_headers(decision, policies=self._by_name, legacy=self.legacy_headers)
        if not decision.allowed:
            text = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
            raise RateLimitHTTPException(
                decision, text, problem_body(decision, instance=request.url.path)
            )
        for name, value in headers:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        return decision


async def rate_limit_exception_handler(request: Request, exc: Exception) -> Response:
    """Render a :class:`RateLimitHTTPException` as ``application/problem+json``."""
    assert isinstance(exc, RateLimitHTTPException)
    return Response(
        content=exc.body,
        status_code=429,
        headers=exc.headers,
        media_type=PROBLEM_CONTENT_TYPE.decode(),
    )
