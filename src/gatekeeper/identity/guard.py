"""The access decision for one request: lists, bans, credentials, tier limits, usage.

The order is the architecture's request path: deny lists and bans first (cheapest, and a banned
client must not cost a credential lookup), then authentication, then the limits of the
principal's tier (or the anonymous per-IP limit), all debited in one atomic limiter call.
A denial counts towards a progressive ban of the same subject. The gateway and ``/sdk/check``
both ask this one object, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gatekeeper.errors import AuthenticationError, PermissionDenied, TokenError
from gatekeeper.identity.principal import Principal
from gatekeeper.identity.service import Identity
from gatekeeper.limits.decision import Decision
from gatekeeper.limits.policy import Check, Policy

__all__ = ["Guard", "Verdict"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a request. ``status`` is 200 when allowed, else the HTTP status."""

    allowed: bool
    status: int
    reason: str
    message: str = ""
    principal: Principal | None = None
    decision: Decision | None = None
    retry_after: int = 0
    policies: tuple[Policy, ...] = field(default=())

    @property
    def subject(self) -> str:
        return self.principal.subject if self.principal else ""


class Guard:
    """Decides requests for the gateway and the decision service."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def check(
        self,
        ip: str,
        *,
        bearer: str | None = None,
        api_key: str | None = None,
        cost: int = 1,
        now_us: int | None = None,
    ) -> Verdict:
        """Decide (and debit) one request of ``cost`` from ``ip`` with these credentials."""
        identity = self.identity
        rule = await identity.ip_rules.match(ip)
        if rule == "deny":
            return Verdict(False, 403, "ip_denied", "this address is denied")
        ip_subject = f"ip:{ip}"
        if rule != "allow":
            banned = await identity.bans.remaining(ip_subject)
            if banned > 0:
                return _banned(banned)
        principal: Principal | None = None
        if bearer is not None or api_key is not None:
            try:
                principal = await identity.authenticate(bearer, api_key)
            except (AuthenticationError, TokenError) as exc:
                return Verdict(False, 401, "unauthorized", str(exc))
            except PermissionDenied as exc:
                return Verdict(False, 403, "forbidden", str(exc))
            banned = await identity.bans.remaining(principal.subject)
            if banned > 0:
                return _banned(banned, principal)
            if principal.via == "admin_token":
                return Verdict(True, 200, "admin", principal=principal)
            tier = await identity.current_tier(principal)
            if tier != principal.tier:
                principal = replace(principal, tier=tier)
            policies = await identity.tiers.policies(tier)
            subject = principal.subject
        elif rule == "allow":
            return Verdict(True, 200, "ip_allowed")
        else:
            policies = (identity.anonymous_policy,)
            subject = ip_subject
        decision = await identity.limiter.decide(
            [Check(p, subject, cost) for p in policies], now_us=now_us
        )
        if principal is not None and principal.key_id is not None:
            await identity.usage.record(subject, allowed=decision.allowed, cost=max(cost, 1))
        if decision.allowed:
            return Verdict(True, 200, "allowed", "", principal, decision, 0, policies)
        ban = await identity.bans.violation(subject)
        if ban:
            identity.emit(*_banned_event(subject, ban), subject)
        retry = max(decision.retry_after, int(ban)) if ban else decision.retry_after
        reason = "banned" if ban else "rate_limited"
        message = (
            f"rate limit exceeded; banned for {int(ban)} s after repeated violations"
            if ban
            else f"rate limit exceeded ({decision.policy}); retry in {retry} s"
        )
        return Verdict(False, 429, reason, message, principal, decision, retry, policies)


def _banned_event(subject: str, seconds: float) -> tuple[str, dict[str, Any]]:
    """The event of banning ``subject`` (``ip:<addr>`` or ``key:<id>``/``user:<id>``)."""
    kind, _, name = subject.partition(":")
    if kind == "ip":
        return "ip.banned", {"ip": name, "seconds": seconds}
    return "key.banned", {"key_id": name, "subject": subject, "seconds": seconds}


def _banned(seconds: float, principal: Principal | None = None) -> Verdict:
    retry = max(1, int(seconds + 0.999))
    return Verdict(
        False, 429, "banned", f"banned for {retry} more seconds", principal, retry_after=retry
    )
