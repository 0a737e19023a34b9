"""The /admin/* routes and /logs on SQLite and PostgreSQL: access control, every lever, audit."""

# ruff: noqa: F811  (pytest fixtures imported from the harness are re-bound as parameters)

from __future__ import annotations

from typing import Any

import pytest

from tests.integration._identity_harness import (  # noqa: F401
    ADMIN,
    ADMIN_TOKEN,
    Api,
    api,
    bearer,
    identity,
)

HOSTILE = "x'); DROP TABLE tenants;-- <img src=x onerror=alert(1)> {{7*7}}"

ADMIN_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/admin/users", None),
    ("GET", "/admin/users/nobody", None),
    ("PATCH", "/admin/users/nobody", {"role": "admin"}),
    ("POST", "/admin/upgrade_tier", {"email": "a@example.com", "tier": "premium"}),
    ("POST", "/admin/block_key", {"key_id": "k"}),
    ("POST", "/admin/unblock_key", {"key_id": "k"}),
    ("POST", "/admin/revoke_key", {"key_id": "k"}),
    ("GET", "/admin/tiers", None),
    ("PUT", "/admin/tiers/gold", {"policies": [{"rate": "1/second"}]}),
    ("DELETE", "/admin/tiers/gold", None),
    ("GET", "/admin/ip_rules", None),
    ("POST", "/admin/ip_rules", {"cidr": "10.0.0.0/8", "action": "deny"}),
    ("DELETE", "/admin/ip_rules/1", None),
    ("GET", "/admin/bans?subject=ip:1.2.3.4", None),
    ("POST", "/admin/unban", {"subject": "ip:1.2.3.4"}),
    ("GET", "/admin/tenants", None),
    ("POST", "/admin/tenants", {"business_id": "shop"}),
    ("GET", "/admin/tenants/shop", None),
    ("PATCH", "/admin/tenants/shop", {"admission_limit": 3}),
    ("DELETE", "/admin/tenants/shop", None),
    ("GET", "/admin/audit", None),
    ("GET", "/admin/usage/k", None),
    ("GET", "/logs", None),
]


async def _user_with_key(api: Api, email: str) -> tuple[dict[str, Any], dict[str, Any]]:
    tokens = await api.register(email)
    key = await api.new_key(tokens["access_token"], name="main")
    return tokens, key


async def test_every_admin_endpoint_refuses_anonymous_and_non_admin_callers(api: Api) -> None:
    """No credentials -> 401; a normal user's token or key -> 403; nothing is changed."""
    tokens, key = await _user_with_key(api, "user@example.com")
    for method, path, body in ADMIN_CALLS:
        anonymous = await api.client.request(method, path, json=body)
        assert anonymous.status_code == 401, (method, path)
        for credentials in (bearer(tokens["access_token"]), {"X-API-Key": key["api_key"]}):
            denied = await api.client.request(method, path, json=body, headers=credentials)
            assert denied.status_code == 403, (method, path, denied.text)
            assert denied.json()["error"] == "forbidden"
    wrong_token = await api.client.get("/admin/users", headers=bearer(ADMIN_TOKEN + "x"))
    assert wrong_token.status_code == 401
    _, total = await api.identity.audit.list()
    assert total == 0


async def test_a_user_with_the_admin_role_is_an_admin_until_demoted(api: Api) -> None:
    """Promoting a user grants admin access at once; demoting removes it at once, even with
    the same (still unexpired) token."""
    tokens = await api.register("boss@example.com")
    user_id = tokens["user_id"]
    promote = await api.client.patch(
        f"/admin/users/{user_id}", json={"role": "admin"}, headers=ADMIN
    )
    assert promote.status_code == 200
    as_admin = await api.client.get("/admin/users", headers=bearer(tokens["access_token"]))
    assert as_admin.status_code == 200
    assert as_admin.json()["total"] == 1
    await api.client.patch(f"/admin/users/{user_id}", json={"role": "user"}, headers=ADMIN)
    demoted = await api.client.get("/admin/users", headers=bearer(tokens["access_token"]))
    assert demoted.status_code == 403
    bad_role = await api.client.patch(
        f"/admin/users/{user_id}", json={"role": "root"}, headers=ADMIN
    )
    assert bad_role.status_code == 422
    assert "role" in bad_role.json()["detail"]


async def test_upgrade_tier_by_key_email_or_id_and_unknown_tiers(api: Api) -> None:
    """upgrade_tier finds the user by api_key (the seed's form), email or user_id; an unknown
    tier is 404 naming it, a malformed one 422, an unknown user 404."""
    tokens, key = await _user_with_key(api, "tina@example.com")
    by_key = await api.client.post(
        "/admin/upgrade_tier", json={"api_key": key["api_key"], "tier": "basic"}, headers=ADMIN
    )
    assert by_key.status_code == 200, by_key.text
    assert by_key.json()["tier"] == "basic"
    by_email = await api.client.post(
        "/admin/upgrade_tier", json={"email": "TINA@example.com", "tier": "premium"}, headers=ADMIN
    )
    assert by_email.json()["tier"] == "premium"
    by_id = await api.client.post(
        "/admin/upgrade_tier",
        json={"user_id": tokens["user_id"], "tier": "enterprise"},
        headers=ADMIN,
    )
    assert by_id.json()["tier"] == "enterprise"
    me = await api.client.get("/auth/me", headers={"X-API-Key": key["api_key"]})
    assert me.json()["tier"] == "enterprise"

    unknown = await api.client.post(
        "/admin/upgrade_tier", json={"email": "tina@example.com", "tier": "platinum"}, headers=ADMIN
    )
    assert unknown.status_code == 404
    assert "platinum" in unknown.json()["detail"]
    malformed = await api.client.post(
        "/admin/upgrade_tier", json={"email": "tina@example.com", "tier": HOSTILE}, headers=ADMIN
    )
    assert malformed.status_code in (404, 422)
    nobody = await api.client.post(
        "/admin/upgrade_tier", json={"email": "ghost@example.com", "tier": "free"}, headers=ADMIN
    )
    assert nobody.status_code == 404
    neither = await api.client.post("/admin/upgrade_tier", json={"tier": "free"}, headers=ADMIN)
    assert neither.status_code == 422


async def test_block_unblock_and_revoke_keys(api: Api) -> None:
    """A blocked key gets 403 until unblocked; a revoked key gets 401 for good."""
    _, key = await _user_with_key(api, "uma@example.com")
    headers = {"X-API-Key": key["api_key"]}
    block = await api.client.post(
        "/admin/block_key", json={"api_key": key["api_key"]}, headers=ADMIN
    )
    assert block.status_code == 200
    assert block.json()["blocked"] is True
    assert (await api.client.get("/auth/me", headers=headers)).status_code == 403
    unblock = await api.client.post(
        "/admin/unblock_key", json={"prefix": key["prefix"]}, headers=ADMIN
    )
    assert unblock.json()["blocked"] is False
    assert (await api.client.get("/auth/me", headers=headers)).status_code == 200
    revoke = await api.client.post(
        "/admin/revoke_key", json={"key_id": key["key_id"]}, headers=ADMIN
    )
    assert revoke.status_code == 200
    assert (await api.client.get("/auth/me", headers=headers)).status_code == 401
    unknown = await api.client.post("/admin/block_key", json={"prefix": "00000000"}, headers=ADMIN)
    assert unknown.status_code == 404


async def test_tiers_are_editable_and_validated(api: Api) -> None:
    """A new tier is 201, an edit 200; bad rates, algorithms and names are 422 naming the
    problem; a tier in use cannot be deleted (409), an unused one can."""
    created = await api.client.put(
        "/admin/tiers/gold",
        json={"policies": [{"rate": "50/minute"}, {"rate": "1000/day"}], "description": HOSTILE},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    assert created.json()["description"] == HOSTILE
    edited = await api.client.put(
        "/admin/tiers/gold", json={"policies": [{"rate": "60/minute"}]}, headers=ADMIN
    )
    assert edited.status_code == 200
    assert edited.json()["policies"] == [{"rate": "60/minute"}]
    assert edited.json()["description"] == HOSTILE
    policies = await api.identity.tiers.policies("gold")
    assert [(p.name, p.rate.limit, p.rate.period) for p in policies] == [("tier-gold", 60, 60.0)]

    for body, problem in [
        ({"policies": [{"rate": "5/fortnight"}]}, "fortnight"),
        ({"policies": [{"rate": "5/minute", "algorithm": "magic"}]}, "magic"),
        ({"policies": [{"rate": "5/minute", "colour": "red"}]}, "colour"),
        ({"policies": []}, "non-empty"),
    ]:
        bad = await api.client.put("/admin/tiers/gold", json=body, headers=ADMIN)
        assert bad.status_code == 422, body
        assert problem in bad.json()["detail"], bad.json()
    bad_name = await api.client.put(
        "/admin/tiers/Gold%20Plus", json={"policies": [{"rate": "1/second"}]}, headers=ADMIN
    )
    assert bad_name.status_code == 422

    tokens = await api.register("vic@example.com")
    await api.client.post(
        "/admin/upgrade_tier", json={"user_id": tokens["user_id"], "tier": "gold"}, headers=ADMIN
    )
    in_use = await api.client.delete("/admin/tiers/gold", headers=ADMIN)
    assert in_use.status_code == 409
    await api.client.post(
        "/admin/upgrade_tier", json={"user_id": tokens["user_id"], "tier": "free"}, headers=ADMIN
    )
    assert (await api.client.delete("/admin/tiers/gold", headers=ADMIN)).status_code == 200
    assert (await api.client.delete("/admin/tiers/gold", headers=ADMIN)).status_code == 404
    listing = await api.client.get("/admin/tiers", headers=ADMIN)
    assert [t["name"] for t in listing.json()["tiers"]] == [
        "free",
        "basic",
        "premium",
        "enterprise",
    ]


async def test_ip_rules_deny_and_allow_with_the_most_specific_winning(api: Api) -> None:
    """A denied network gets 403 from /sdk/check; a more specific allow inside it wins;
    removing the deny restores access; bad CIDRs are 422."""
    deny = await api.client.post(
        "/admin/ip_rules",
        json={"cidr": "198.51.100.0/24", "action": "deny", "note": HOSTILE},
        headers=ADMIN,
    )
    assert deny.status_code == 201
    assert deny.json()["note"] == HOSTILE
    check = await api.client.post("/sdk/check", json={})
    assert check.status_code == 403
    assert check.json()["reason"] == "ip_denied"
    allow = await api.client.post(
        "/admin/ip_rules", json={"cidr": "198.51.100.7", "action": "allow"}, headers=ADMIN
    )
    assert allow.json()["cidr"] == "198.51.100.7/32"
    assert (await api.client.post("/sdk/check", json={})).status_code == 200
    await api.client.delete(f"/admin/ip_rules/{allow.json()['id']}", headers=ADMIN)
    assert (await api.client.post("/sdk/check", json={})).status_code == 403
    await api.client.delete(f"/admin/ip_rules/{deny.json()['id']}", headers=ADMIN)
    assert (await api.client.post("/sdk/check", json={})).status_code == 200
    for body in (
        {"cidr": "300.1.1.1", "action": "deny"},
        {"cidr": "10.0.0.0/8", "action": "maybe"},
        {"cidr": HOSTILE, "action": "deny"},
    ):
        bad = await api.client.post("/admin/ip_rules", json=body, headers=ADMIN)
        assert bad.status_code == 422, body
    rules = await api.client.get("/admin/ip_rules", headers=ADMIN)
    assert rules.json()["rules"] == []


async def test_tenants_crud_with_seed_defaults_and_validation(api: Api) -> None:
    """Tenants are created with the waiting room's defaults, patched, read, listed and
    deleted; duplicates are 409, out-of-range settings 422, unknown tenants 404."""
    created = await api.client.post(
        "/admin/tenants", json={"business_id": "shop-1", "name": HOSTILE}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    tenant = created.json()
    assert tenant["name"] == HOSTILE
    assert (tenant["admission_limit"], tenant["admission_frequency"]) == (10, 5)
    assert tenant["ip_status_polling_limit_interval"] == 60
    dup = await api.client.post("/admin/tenants", json={"business_id": "shop-1"}, headers=ADMIN)
    assert dup.status_code == 409
    patched = await api.client.patch(
        "/admin/tenants/shop-1", json={"admission_limit": 25, "enabled": False}, headers=ADMIN
    )
    assert patched.json()["admission_limit"] == 25
    assert patched.json()["enabled"] is False
    assert patched.json()["jwt_expiry_seconds"] == 120
    for body in (
        {"jwt_expiry_seconds": 5},
        {"admission_limit": 0},
        {"colour": "red"},
        {"business_id": "other"},
    ):
        bad = await api.client.patch("/admin/tenants/shop-1", json=body, headers=ADMIN)
        assert bad.status_code == 422, body
    bad_id = await api.client.post("/admin/tenants", json={"business_id": HOSTILE}, headers=ADMIN)
    assert bad_id.status_code == 422
    listing = await api.client.get("/admin/tenants", headers=ADMIN)
    assert [t["business_id"] for t in listing.json()["tenants"]] == ["shop-1"]
    assert (await api.client.delete("/admin/tenants/shop-1", headers=ADMIN)).status_code == 200
    assert (await api.client.get("/admin/tenants/shop-1", headers=ADMIN)).status_code == 404
    assert (await api.client.patch("/admin/tenants/x", json={}, headers=ADMIN)).status_code == 404


async def test_every_change_is_audited_with_actor_ip_and_detail(api: Api) -> None:
    """Admin actions appear in /admin/audit, newest first, with who, what, when, from where."""
    tokens, key = await _user_with_key(api, "walt@example.com")
    await api.client.post("/admin/block_key", json={"key_id": key["key_id"]}, headers=ADMIN)
    await api.client.post(
        "/admin/upgrade_tier", json={"user_id": tokens["user_id"], "tier": "basic"}, headers=ADMIN
    )
    await api.client.patch(
        f"/admin/users/{tokens['user_id']}", json={"role": "admin"}, headers=ADMIN
    )
    await api.client.post(
        "/admin/tenants", json={"business_id": "t1"}, headers=bearer(tokens["access_token"])
    )
    audit = await api.client.get("/admin/audit", headers=ADMIN)
    entries = audit.json()["entries"]
    assert [e["action"] for e in entries] == [
        "tenant.create",
        "user.update",
        "user.tier",
        "key.block",
    ]
    assert entries[0]["actor"] == f"user:{tokens['user_id']} (walt@example.com)"
    assert entries[1]["actor"] == "admin-token"
    assert all(e["ip"] == "198.51.100.7" for e in entries)
    assert entries[2]["detail"] == {"old": "free", "new": "basic"}
    assert entries[0]["at"].startswith("2023-11-14")  # the fake clock's date
    only = await api.client.get("/admin/audit?action=key.block", headers=ADMIN)
    assert only.json()["total"] == 1


async def test_users_listing_pages_and_user_detail(api: Api) -> None:
    """GET /admin/users pages through users; the detail lists their keys without secrets."""
    for n in range(3):
        await api.register(f"user{n}@example.com")
        api.clock.advance(1)  # oldest first is by creation time
    page = await api.client.get("/admin/users?limit=2&offset=1", headers=ADMIN)
    assert page.json()["total"] == 3
    assert [u["email"] for u in page.json()["users"]] == ["user1@example.com", "user2@example.com"]
    tokens, key = await _user_with_key(api, "xena@example.com")
    detail = await api.client.get(f"/admin/users/{tokens['user_id']}", headers=ADMIN)
    assert detail.json()["api_keys"][0]["prefix"] == key["prefix"]
    assert key["api_key"] not in detail.text
    bad = await api.client.get("/admin/users?limit=0", headers=ADMIN)
    assert bad.status_code == 422


@pytest.mark.parametrize("target", ["/admin/users", "/admin/audit"])
@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("offset=36893488147419103232", "must be at most 2147483647"),
        ("offset=9223372036854775808", "must be at most 2147483647"),
        ("offset=-1", "must be at least 0"),
        ("offset=1e3", "must be an integer"),
        ("limit=true", "must be an integer"),
        ("limit=1001", "must be at most 1000"),
    ],
)
async def test_paging_parameters_out_of_range_are_422_naming_them(
    api: Api, target: str, query: str, problem: str
) -> None:
    """A huge, negative or non-integer offset or limit is a JSON 422 naming the parameter on
    every engine (it was a plain-text 500 from SQLite's integer overflow); the largest offset
    allowed is served (an empty page)."""
    response = await api.client.get(f"{target}?{query}", headers=ADMIN)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    name = query.partition("=")[0]
    assert body["problems"] == [{"field": name, "in": "query", "problem": problem}]
    assert name in body["detail"]
    largest = await api.client.get(f"{target}?offset=2147483647", headers=ADMIN)
    assert largest.status_code == 200
    assert largest.json()["total"] >= 0


async def test_bans_can_be_inspected_and_lifted(api: Api) -> None:
    """After enough denials a subject is banned (seen in /admin/bans); unban lifts it."""
    subject = "ip:198.51.100.7"
    for _ in range(100):
        assert (await api.client.post("/sdk/check", json={})).status_code == 200
    for _ in range(api.identity.options.bans.threshold):
        await api.client.post("/sdk/check", json={})
    status = await api.client.get(f"/admin/bans?subject={subject}", headers=ADMIN)
    assert status.json()["banned"] is True
    assert status.json()["remaining"] == pytest.approx(300)
    lifted = await api.client.post("/admin/unban", json={"subject": subject}, headers=ADMIN)
    assert lifted.json()["banned"] is False
    assert (await api.client.get(f"/admin/bans?subject={subject}", headers=ADMIN)).json()[
        "banned"
    ] is False


async def test_logs_and_key_usage_for_admins(api: Api) -> None:
    """/logs shows recent decisions; /admin/usage/{key} any key's history."""
    _, key = await _user_with_key(api, "yan@example.com")
    for _ in range(3):
        await api.client.post(
            "/sdk/check", json={"endpoint": "/orders"}, headers={"X-API-Key": key["api_key"]}
        )
    logs = await api.client.get("/logs?limit=2", headers=ADMIN)
    entries = logs.json()["entries"]
    assert len(entries) == 2
    assert entries[0]["endpoint"] == "/orders"
    assert entries[0]["subject"] == f"key:{key['key_id']}"
    usage = await api.client.get(
        f"/admin/usage/{key['key_id']}?granularity=day&count=2", headers=ADMIN
    )
    assert [b["requests"] for b in usage.json()["buckets"]] == [0, 3]
    assert (await api.client.get("/admin/usage/nope", headers=ADMIN)).status_code == 404
    bad = await api.client.get(f"/admin/usage/{key['key_id']}?granularity=week", headers=ADMIN)
    assert bad.status_code == 422
