"""What a request's credentials are, and the fields of the guard's answer: one rule for every
edge that authenticates (the gateway's Authenticate step, Envoy's ext_authz).

``mode`` is what the caller accepts: ``api_key`` (an ``X-API-Key``), ``jwt`` (a Bearer token)
or ``any`` (either).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatekeeper.limits.headers import rate_limit_headers

if TYPE_CHECKING:
    from gatekeeper.identity.guard import Verdict

__all__ = ["credentials", "missing_credentials", "verdict_fields"]

Headers = list[tuple[bytes, bytes]]
_WANTED = {"api_key": "an X-API-Key", "jwt": "a Bearer token"}


def credentials(
    mode: str | None, authorization: bytes | None, api_key: bytes | None
) -> tuple[str | None, str | None]:
    """``(bearer, api_key)`` from the ``Authorization`` value and the API key a request
    carries, as ``mode`` accepts them."""
    bearer = key = None
    if mode != "api_key":
        scheme, _, value = (authorization or b"").partition(b" ")
        if scheme.lower() == b"bearer" and value.strip():
            bearer = value.strip().decode("latin-1")
    if mode != "jwt" and api_key:
        key = api_key.decode("latin-1")
    return bearer, key


def missing_credentials(mode: str | None) -> tuple[str, Headers]:
    """The 401's sentence and challenge for a request without the credentials ``mode`` needs."""
    wanted = _WANTED.get(mode or "", "an X-API-Key or a Bearer token")
    challenge: Headers = [] if mode == "api_key" else [(b"www-authenticate", b"Bearer")]
    return f"this route needs {wanted}", challenge


def verdict_fields(verdict: Verdict, style: str = "ietf") -> Headers:
    """The fields the guard's ``verdict`` adds to the answer: the tier limits' RateLimit
    fields in ``style``, and Retry-After when denied (the guard's, which counts a ban)."""
    headers: Headers = []
    if verdict.decision is not None and style != "none":
        policies = {p.name: p for p in verdict.policies}
        headers = [
            h
            for h in rate_limit_headers(verdict.decision, policies=policies, style=style)
            if h[0] != b"retry-after"
        ]
    if not verdict.allowed and verdict.retry_after:
        headers.append((b"retry-after", str(verdict.retry_after).encode()))
    return headers
