"""Unit tests of the gateway's access-line helpers: request ids and redacted limit subjects."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.gateway.flow.subjects import shown_subject
from gatekeeper.limits.decision import Decision, PolicyResult
from gatekeeper.limits.policy import Policy
from gatekeeper.observability.access import AccessLog, Termination
from gatekeeper.observability.proxied import ensure_request_id, log_proxied


@dataclass
class FakeRequest:
    """What the helpers read from the gateway's ProxyRequest."""

    headers: list[tuple[bytes, bytes]]
    method: str = "GET"
    path: str = "/api/info"
    target: bytes = b"/api/info"
    client_ip: str = "203.0.113.9"

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass
class Rule:
    policy: Policy
    key: str


@dataclass
class Route:
    limits: tuple[Rule, ...]
    name: str = "api"
    upstream: str = "backends"
    extra: dict[str, str] = field(default_factory=dict)


def _limited(policy: str) -> Decision:
    return Decision(False, (PolicyResult(policy, False, 5, 0, 10.0, 4.0),))


def _line(route: Route, request: FakeRequest, status: int, note: dict[str, Any]) -> Any:
    buffer = io.StringIO()
    decision = note.get("decision")
    subject = None
    if decision is not None:
        subject = shown_subject(route, request, decision.policy)  # type: ignore[arg-type]
    rid = request.header(b"x-request-id")
    log_proxied(
        AccessLog(buffer, enabled=True, fmt="json"),
        request,
        route,
        status,
        0.002,
        request_id=rid.decode() if rid else "",
        term=note.get("term"),
        decision=decision,
        limit_key=subject,
    )
    return json.loads(buffer.getvalue())


def test_request_id_is_added_kept_or_replaced_in_the_forwarded_headers() -> None:
    """No id: one is added; a sane one is kept as is; an insane one is replaced, once."""
    bare = FakeRequest([(b"accept", b"*/*")])
    rid = ensure_request_id(bare)
    assert bare.headers[-1] == (b"x-request-id", rid.encode())
    kept = FakeRequest([(b"x-request-id", b"abc-1")])
    assert ensure_request_id(kept) == "abc-1"
    assert kept.headers == [(b"x-request-id", b"abc-1")]
    odd = FakeRequest([(b"x-request-id", b"<script>"), (b"accept", b"*/*")])
    new = ensure_request_id(odd)
    assert [h for h in odd.headers if h[0] == b"x-request-id"] == [(b"x-request-id", new.encode())]


def test_a_limited_api_key_is_hashed_in_the_line_but_an_ip_is_not() -> None:
    """The line names the policy; an API key subject shows as a hash, an IP subject as is."""
    per_key = Policy.parse("per-key", "5/minute")
    per_ip = Policy.parse("per-ip", "5/minute")
    route = Route((Rule(per_ip, "ip"), Rule(per_key, "api_key")))
    request = FakeRequest([(b"x-api-key", b"sk_live_secret"), (b"x-request-id", b"r-1")])
    line = _line(route, request, 429, {"decision": _limited("per-key")})
    assert line["term"] == "RL"
    assert line["policy"] == "per-key"
    assert line["limit_key"].startswith("key:#")
    assert "sk_live_secret" not in json.dumps(line)
    assert "upstream" not in line
    by_ip = _line(route, request, 429, {"decision": _limited("per-ip")})
    assert by_ip["limit_key"] == "ip:203.0.113.9"


def test_terminations_noted_by_the_pipeline_reach_the_line() -> None:
    """A noted termination wins over inference, and local endings name no upstream."""
    route = Route(())
    request = FakeRequest([(b"x-request-id", b"r-2")])
    full = _line(route, request, 503, {"term": Termination.QUEUE_FULL})
    assert (full["term"], "upstream" in full) == ("QF", False)
    timeout = _line(route, request, 504, {"term": Termination.UPSTREAM_TIMEOUT})
    assert (timeout["term"], timeout["upstream"]) == ("UT", "backends")
    ok = _line(route, request, 200, {})
    assert (ok["term"], ok["request_id"]) == ("--", "r-2")
