"""HTTP fields and the 429 body that tell a client about its limits.

The fields follow draft-ietf-httpapi-ratelimit-headers (revision 11), whose values are RFC 9651
structured-field Lists with one item per policy, named by a String::

    RateLimit-Policy: "per-ip";q=100;w=60, "per-key";q=1000;w=3600
    RateLimit: "per-ip";r=42;t=17, "per-key";r=998;t=3577

``q`` is the quota, ``w`` the window in seconds, ``r`` the remaining quota and ``t`` the seconds
until it resets. Denials add ``Retry-After`` (whole seconds, rounded up, so that a client waiting
it out is admitted). The legacy ``X-RateLimit-Limit/-Remaining/-Reset`` trio is optional.

Everything returns raw ``(bytes, bytes)`` pairs for ASGI and the gateway's hot path; the encoded
policy items are cached per policy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import lru_cache

from gatekeeper.limits.decision import Decision, PolicyResult
from gatekeeper.limits.policy import Policy

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "problem_body",
    "rate_limit_headers",
    "too_many_requests",
]

PROBLEM_CONTENT_TYPE = b"application/problem+json"
Header = tuple[bytes, bytes]


def _sf_string(text: str) -> str:
    """An RFC 9651 sf-string: printable ASCII, with ``"`` and ``\\`` escaped."""
    safe = "".join(c if " " <= c <= "~" else "?" for c in text)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


@lru_cache(maxsize=4096)
def _policy_item(name: str, quota: int, window: int | None) -> str:
    item = f"{_sf_string(name)};q={quota}"
    return item if window is None else f"{item};w={window}"


@lru_cache(maxsize=4096)
def _name(name: str) -> str:
    return _sf_string(name)


def _seconds(value: float) -> int:
    """Whole seconds, rounded up (never tell a client to come back too early)."""
    return math.ceil(value - 1e-9) if value > 0 else 0


def _window(result: PolicyResult, policies: Mapping[str, Policy] | None) -> int | None:
    if policies is None:
        return None
    policy = policies.get(result.policy)
    return None if policy is None else max(1, _seconds(policy.rate.period))


def _enforced(decision: Decision) -> list[PolicyResult]:
    # Shadow policies are not enforced: advertising them would mislead clients. The binding
    # policy comes first, the one a client most needs to read.
    results = [r for r in decision.results if not r.shadow]
    if len(results) > 1:
        binding = decision.binding
        results.sort(key=lambda r: r is not binding)
    return results


_SINGLE: dict[tuple[str, int, int | None], tuple[bytes, str]] = {}


def _single(result: PolicyResult, policies: Mapping[str, Policy] | None) -> tuple[bytes, str]:
    """The ``RateLimit-Policy`` field of one policy and its quoted name, built once."""
    window = _window(result, policies)
    key = (result.policy, result.limit, window)
    cached = _SINGLE.get(key)
    if cached is None:
        if len(_SINGLE) >= 4096:
            _SINGLE.clear()
        item = _policy_item(result.policy, result.limit, window)
        cached = _SINGLE[key] = (item.encode("ascii"), _name(result.policy))
    return cached


def rate_limit_headers(
    decision: Decision,
    *,
    policies: Mapping[str, Policy] | None = None,
    legacy: bool = False,
    style: str = "ietf",
) -> list[Header]:
    """The fields for a response decided by ``decision``.

    ``style`` picks the families: ``ietf`` (``RateLimit``/``RateLimit-Policy``), ``legacy``
    (``X-RateLimit-Limit/-Remaining/-Reset``, as GitHub and Twitter send them), ``both`` or
    ``none``; ``legacy=True`` is ``both``. A denial carries ``Retry-After`` whatever the style.
    ``policies`` (name -> Policy) supplies each policy's window for ``RateLimit-Policy``'s ``w``;
    without it, ``w`` is left out (it is optional in the draft). Degraded decisions get only
    ``Retry-After`` (when denied).
    """
    if legacy:
        style = "both"
    only = decision.results
    if len(only) == 1 and decision.allowed and not decision.degraded and style == "ietf":
        r = only[0]
        if not r.shadow:  # the common answer, one admitted policy: no lists, cached names
            policy_field, name = _single(r, policies)
            state = f"{name};r={max(0, r.remaining)};t={_seconds(r.reset_after)}"
            return [(b"ratelimit-policy", policy_field), (b"ratelimit", state.encode("ascii"))]
    # A degraded decision knows nothing true about the shared quota (fail-open has no state, a
    # fallback only this replica's share): advertise nothing rather than something wrong.
    results = [] if decision.degraded or style == "none" else _enforced(decision)
    headers: list[Header] = []
    if results and style != "legacy":
        policy_items = []
        state_items = []
        for r in results:
            policy_items.append(_policy_item(r.policy, r.limit, _window(r, policies)))
            reset = _seconds(r.reset_after)
            if not r.allowed:
                reset = max(reset, _seconds(r.retry_after))
            state_items.append(f"{_name(r.policy)};r={max(0, r.remaining)};t={reset}")
        headers.append((b"ratelimit-policy", ", ".join(policy_items).encode("ascii")))
        headers.append((b"ratelimit", ", ".join(state_items).encode("ascii")))
    if not decision.allowed:
        headers.append((b"retry-after", str(decision.retry_after).encode("ascii")))
    if results and style != "ietf":
        binding = results[0]
        reset = _seconds(binding.reset_after)
        if not decision.allowed:
            reset = max(reset, decision.retry_after)
        headers.append((b"x-ratelimit-limit", str(binding.limit).encode("ascii")))
        headers.append((b"x-ratelimit-remaining", str(max(0, binding.remaining)).encode("ascii")))
        headers.append((b"x-ratelimit-reset", str(reset).encode("ascii")))
    return headers


def problem_body(decision: Decision, *, instance: str | None = None) -> bytes:
    """An RFC 9457 problem document for a 429, with the limit's state as extension members.

    Besides ``type``/``title``/``status``/``detail``, it carries ``error`` and ``message`` (the
    plain fields simple clients look for), ``policy``, ``limit``, ``remaining``,
    ``retry_after`` and ``reset_after`` (whole seconds).
    """
    binding = decision.binding
    retry = decision.retry_after
    detail = f"Rate limit '{binding.policy}' exceeded; retry in {retry} second(s)."
    body: dict[str, object] = {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": detail,
        "error": "rate_limited",
        "message": detail,
        "policy": binding.policy,
        "limit": binding.limit,
        "remaining": max(0, binding.remaining),
        "retry_after": retry,
        "reset_after": max(decision.reset_after, retry),
    }
    if decision.degraded:
        body["degraded"] = True
    if instance is not None:
        body["instance"] = instance
    return json.dumps(body, separators=(",", ":")).encode()


def too_many_requests(
    decision: Decision,
    *,
    policies: Mapping[str, Policy] | None = None,
    legacy: bool = False,
    instance: str | None = None,
) -> tuple[int, list[Header], bytes]:
    """A complete 429: status, headers (with content type and length) and the problem body."""
    body = problem_body(decision, instance=instance)
    headers = rate_limit_headers(decision, policies=policies, legacy=legacy)
    headers.append((b"content-type", PROBLEM_CONTENT_TYPE))
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    return 429, headers, body
