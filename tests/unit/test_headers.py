"""RateLimit fields (draft-ietf-httpapi-ratelimit-headers), Retry-After and the 429 body."""

from __future__ import annotations

import json

from gatekeeper.limits.decision import Decision, PolicyResult
from gatekeeper.limits.headers import problem_body, rate_limit_headers, too_many_requests
from gatekeeper.limits.policy import Policy


def result(name: str, allowed: bool, limit: int, remaining: int, reset: float, retry: float = 0.0,
           shadow: bool = False) -> PolicyResult:  # fmt: skip
    return PolicyResult(name, allowed, limit, remaining, reset, retry, shadow)


POLICIES = {
    "per-ip": Policy.parse("per-ip", "100/minute"),
    "per-key": Policy.parse("per-key", "1000/hour"),
}


def as_dict(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in headers}


def test_allowed_response_carries_structured_field_lists() -> None:
    """RateLimit-Policy and RateLimit are sf-lists with q/w and r/t parameters per policy."""
    decision = Decision(True, (result("per-ip", True, 100, 50, 29.2),))
    headers = as_dict(rate_limit_headers(decision, policies=POLICIES))
    assert headers == {
        "ratelimit-policy": '"per-ip";q=100;w=60',
        "ratelimit": '"per-ip";r=50;t=30',
    }


def test_binding_policy_comes_first_and_all_enforced_policies_are_listed() -> None:
    """With two policies, the one closest to its limit is the first list member."""
    decision = Decision(
        True,
        (result("per-key", True, 1000, 900, 3000.0), result("per-ip", True, 100, 3, 10.0)),
    )
    headers = as_dict(rate_limit_headers(decision, policies=POLICIES))
    assert headers["ratelimit-policy"] == '"per-ip";q=100;w=60, "per-key";q=1000;w=3600'
    assert headers["ratelimit"] == '"per-ip";r=3;t=10, "per-key";r=900;t=3000'


def test_denial_adds_retry_after_rounded_up() -> None:
    """A denial adds Retry-After in whole seconds, rounded up (2.01 s -> 3)."""
    decision = Decision(False, (result("per-ip", False, 100, 0, 1.5, 2.01),))
    headers = as_dict(rate_limit_headers(decision, policies=POLICIES))
    assert headers["retry-after"] == "3"
    assert headers["ratelimit"] == '"per-ip";r=0;t=3'


def test_window_is_omitted_without_the_policy_and_names_are_escaped() -> None:
    """Unknown policies get no w parameter; quotes and backslashes in names are escaped."""
    decision = Decision(True, (result('odd"na\\me', True, 7, 6, 1.0),))
    headers = as_dict(rate_limit_headers(decision))
    assert headers["ratelimit-policy"] == '"odd\\"na\\\\me";q=7'


def test_shadow_policies_are_not_advertised() -> None:
    """A shadow policy is decided but not enforced, so it gets no header."""
    decision = Decision(True, (result("trial", False, 5, 0, 9.0, 9.0, shadow=True),), False, True)
    assert rate_limit_headers(decision) == []


def test_legacy_headers_are_optional() -> None:
    """X-RateLimit-Limit/-Remaining/-Reset appear only when asked for."""
    decision = Decision(True, (result("per-ip", True, 100, 42, 17.5),))
    assert "x-ratelimit-limit" not in as_dict(rate_limit_headers(decision))
    legacy = as_dict(rate_limit_headers(decision, legacy=True))
    assert (legacy["x-ratelimit-limit"], legacy["x-ratelimit-remaining"]) == ("100", "42")
    assert legacy["x-ratelimit-reset"] == "18"


def test_problem_body_is_rfc9457_with_the_limit_state() -> None:
    """The 429 body is a problem document naming the policy, limit and wait."""
    decision = Decision(False, (result("per-ip", False, 100, 0, 30.0, 4.2),))
    body = json.loads(problem_body(decision, instance="/api/data"))
    assert body["type"] == "about:blank"
    assert body["title"] == "Too Many Requests"
    assert body["status"] == 429
    assert body["policy"] == "per-ip"
    assert body["limit"] == 100
    assert body["remaining"] == 0
    assert body["retry_after"] == 5
    assert body["reset_after"] == 30
    assert body["instance"] == "/api/data"
    assert "per-ip" in body["detail"]


def test_legacy_fields_on_a_denial() -> None:
    """A denial's legacy trio says 0 remaining and resets no earlier than Retry-After."""
    decision = Decision(False, (result("per-ip", False, 100, 0, 1.0, 4.0),))
    fields = as_dict(rate_limit_headers(decision, legacy=True))
    assert fields["x-ratelimit-remaining"] == "0"
    assert fields["x-ratelimit-reset"] == "4"


def test_too_many_requests_is_a_complete_response() -> None:
    """Status 429, problem+json content type, correct content length, Retry-After."""
    decision = Decision(False, (result("per-ip", False, 100, 0, 30.0, 4.0),), degraded=True)
    status, headers, body = too_many_requests(decision, policies=POLICIES, legacy=True)
    fields = as_dict(headers)
    assert status == 429
    assert fields["content-type"] == "application/problem+json"
    assert int(fields["content-length"]) == len(body)
    assert fields["retry-after"] == "4"
    assert "ratelimit" not in fields  # degraded: nothing true to say about the shared quota
    assert json.loads(body)["degraded"] is True
