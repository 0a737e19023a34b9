"""Pure identity rules: passwords, tier policies, progressive bans (memory), usage buckets."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigurationError, InvalidInput
from gatekeeper.identity.api_keys import parse_key
from gatekeeper.identity.bans import BanList, BanRules
from gatekeeper.identity.passwords import Passwords, password_problem
from gatekeeper.identity.principal import ADMIN_TOKEN_PRINCIPAL, Principal
from gatekeeper.identity.tiers import build_policies
from gatekeeper.identity.usage import RequestLog, UsageCounters
from gatekeeper.limits.policy import Algorithm
from gatekeeper.testing import FakeClock


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("correct horse", True),
        ("short", False),
        ("p" * 129, False),
        ("Password", False),
        ("abababab", False),
        ("ab12cd34", True),
    ],
)
def test_password_rules(password: str, ok: bool) -> None:
    """Length bounds, a common-password list and a minimum of distinct characters."""
    assert (password_problem(password) is None) is ok


async def test_argon2id_hashes_verify_and_unknown_users_cost_the_same() -> None:
    """Hashes are argon2id, verify only the right password, and verifying against no user
    (the dummy hash) says no."""
    passwords = Passwords(time_cost=1, memory_cost=64)
    stored = await passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert await passwords.verify(stored, "correct horse")
    assert not await passwords.verify(stored, "wrong horse")
    assert not await passwords.verify(None, "correct horse")
    assert not await passwords.verify("not-a-hash", "x")
    assert passwords.needs_rehash(stored) is False
    assert Passwords(time_cost=2, memory_cost=64).needs_rehash(stored) is True


def test_tier_policies_are_built_and_validated() -> None:
    """Specs become engine policies with default names; bad specs name the entry."""
    policies = build_policies(
        "gold", [{"rate": "10/second", "algorithm": "gcra", "burst": 20}, {"rate": "1000/day"}]
    )
    assert [p.name for p in policies] == ["tier-gold", "tier-gold-1"]
    assert policies[0].algorithm is Algorithm.GCRA
    assert policies[0].capacity == 20
    with pytest.raises(InvalidInput, match="policy #1"):
        build_policies("gold", [{"rate": "1/s"}, {"rate": "ten per day"}])
    with pytest.raises(InvalidInput, match="unique"):
        build_policies("gold", [{"rate": "1/s", "name": "x"}, {"rate": "2/s", "name": "x"}])
    with pytest.raises(InvalidInput, match="burst"):
        build_policies("gold", [{"rate": "1/s", "algorithm": "fixed_window", "burst": 3}])
    with pytest.raises(InvalidInput, match="object"):
        build_policies("gold", ["5/minute"])  # type: ignore[list-item]


async def test_progressive_bans_double_then_decay(fake_clock: FakeClock) -> None:
    """The 1st offence bans 300 s, the 2nd 600 s, the 3rd 1200 s; after a quiet decay
    period the next offence is back to 300 s."""
    rules = BanRules(threshold=3, window=60, base=300, multiplier=2, decay=3600)
    bans = BanList(None, fake_clock, rules)

    async def offend() -> float:
        results = [await bans.violation("ip:1.2.3.4") for _ in range(rules.threshold)]
        assert results[:-1] == [0.0] * (rules.threshold - 1)
        return results[-1]

    assert await offend() == 300
    assert await bans.remaining("ip:1.2.3.4") == 300
    fake_clock.advance(301)
    assert await bans.remaining("ip:1.2.3.4") == 0
    assert await offend() == 600
    fake_clock.advance(601)
    assert await offend() == 1200
    fake_clock.advance(1201 + 3601)
    assert await offend() == 300
    await bans.lift("ip:1.2.3.4")
    assert await bans.remaining("ip:1.2.3.4") == 0


async def test_violations_only_count_within_one_window(fake_clock: FakeClock) -> None:
    """Denials spread over several windows never add up to an offence."""
    bans = BanList(None, fake_clock, BanRules(threshold=3, window=60))
    for _ in range(6):
        assert await bans.violation("key:k") == 0
        fake_clock.advance(31)  # two per window at most


def test_ban_rules_are_validated() -> None:
    """Nonsense ban rules are a configuration error."""
    with pytest.raises(ConfigurationError):
        BanRules(threshold=0)


async def test_usage_is_bucketed_by_hour_and_day(fake_clock: FakeClock) -> None:
    """Requests and denials land in the current hour and day; history is oldest first."""
    usage = UsageCounters(None, fake_clock)
    await usage.record("key:a", allowed=True)
    await usage.record("key:a", allowed=False)
    fake_clock.advance(3600)
    await usage.record("key:a", allowed=True, cost=3)
    hours = await usage.history("key:a", "hour", 3)
    assert [(h["requests"], h["denied"]) for h in hours] == [(0, 0), (1, 1), (3, 0)]
    assert hours[2]["start"] - hours[1]["start"] == 3600
    totals = await usage.totals("key:a")
    assert totals["requests_this_hour"] == 3
    with pytest.raises(InvalidInput):
        await usage.history("key:a", "week", 1)


async def test_request_log_keeps_the_newest(fake_clock: FakeClock) -> None:
    """The in-process request log is bounded and newest first."""
    log = RequestLog(None, fake_clock, size=3)
    for n in range(5):
        await log.append(n=n)
    assert [e["n"] for e in await log.recent(10)] == [4, 3, 2]


def test_key_format_and_principal_subjects() -> None:
    """Only well-formed keys yield a prefix; principals name their limit subject."""
    assert parse_key("gk_0123abcd_" + "A" * 43) == "0123abcd"
    assert parse_key("gk_0123abcd_short") is None
    assert parse_key(None) is None
    by_key = Principal("u", "e", "user", "free", "api_key", key_id="k1")
    assert by_key.subject == "key:k1"
    assert Principal("u", "e", "user", "free", "jwt").subject == "user:u"
    assert ADMIN_TOKEN_PRINCIPAL.is_admin
    assert ADMIN_TOKEN_PRINCIPAL.actor == "admin-token"
