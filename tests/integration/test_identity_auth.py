"""The /auth/* routes on SQLite and PostgreSQL: registration, login, tokens, keys, bad paths."""

# ruff: noqa: F811  (pytest fixtures imported from the harness are re-bound as parameters)

from __future__ import annotations

import asyncio
import base64
import json

import jwt
import pytest

from gatekeeper.identity.tokens import KeyRing, TokenCodec
from tests.integration._identity_harness import (  # noqa: F401
    PASSWORD,
    Api,
    api,
    bearer,
    identity,
)

INJECTIONS = [
    "robert'); DROP TABLE users;--",
    "<script>alert(1)</script>",
    "{{7*7}} ${7*7} %s %n",
    "' OR '1'='1",
    "\u202eevil\u2028line",
    "' UNION SELECT password_hash FROM users --",
]


async def test_register_returns_tokens_and_the_free_tier(api: Api) -> None:
    """Registration creates a free-tier user and logs them in."""
    body = await api.register("Alice@Example.com")
    assert body["tier"] == "free"
    assert body["user"]["email"] == "alice@example.com"
    assert body["token_type"] == "Bearer"
    me = await api.client.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"
    assert me.json()["limits"] == [
        {"name": "tier-free", "rate": "5/minute", "algorithm": "sliding_log"}
    ]
    assert "password_hash" not in me.text


async def test_duplicate_registration_is_a_conflict(api: Api) -> None:
    """A second account with the same email (in any case) gets 409."""
    await api.register("bob@example.com")
    again = await api.client.post(
        "/auth/register", json={"email": "BOB@example.com", "password": PASSWORD}
    )
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short", "at least 8"),
        ("x" * 129, "at most 128"),
        ("ILoveYou", "too common"),
        ("aaaaaaaaaaaa", "4 different"),
        ("y" * 5000, "password"),
    ],
)
async def test_weak_or_oversized_passwords_are_refused(
    api: Api, password: str, problem: str
) -> None:
    """Weak or oversized passwords get 422 naming the rule, and never echo the password."""
    response = await api.client.post(
        "/auth/register", json={"email": "carol@example.com", "password": password}
    )
    assert response.status_code == 422
    assert problem in response.json()["detail"]
    assert password not in response.text


async def test_bad_emails_and_extra_fields_are_422(api: Api) -> None:
    """Malformed addresses and unknown fields are rejected with the field named (422); a
    body that is not JSON at all is a 400."""
    bad = await api.client.post("/auth/register", json={"email": "nope", "password": PASSWORD})
    assert bad.status_code == 422
    assert "email" in bad.json()["detail"]
    extra = await api.client.post(
        "/auth/register", json={"email": "d@example.com", "password": PASSWORD, "role": "admin"}
    )
    assert extra.status_code == 422
    assert "role" in extra.json()["detail"]
    missing = await api.client.post("/auth/register", json={"email": "d@example.com"})
    assert missing.status_code == 422
    assert "password" in missing.json()["detail"]
    garbage = await api.client.post(
        "/auth/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert garbage.status_code == 400
    assert garbage.json()["error"] == "bad_request"


async def test_self_registration_cannot_pick_a_paid_tier(api: Api) -> None:
    """Asking for premium at registration is refused; upgrades are an admin's job."""
    response = await api.client.post(
        "/auth/register",
        json={"email": "e@example.com", "password": PASSWORD, "tier": "premium"},
    )
    assert response.status_code == 403


async def test_login_gives_the_same_answer_for_unknown_user_and_wrong_password(api: Api) -> None:
    """Unknown account and wrong password are indistinguishable (same status and body)."""
    await api.register("frank@example.com")
    wrong = await api.client.post(
        "/auth/login", json={"email": "frank@example.com", "password": "not the password"}
    )
    unknown = await api.client.post(
        "/auth/login", json={"email": "nobody@example.com", "password": "not the password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    ok = await api.client.post(
        "/auth/login", json={"email": "FRANK@example.com", "password": PASSWORD}
    )
    assert ok.status_code == 200
    assert ok.json()["access_token"]


async def test_login_is_throttled_per_account(api: Api) -> None:
    """The sixth login attempt on one account within a minute gets 429 with Retry-After;
    a minute later it is allowed again."""
    await api.register("grace@example.com")
    for _ in range(5):
        r = await api.client.post(
            "/auth/login", json={"email": "grace@example.com", "password": "wrong-password"}
        )
        assert r.status_code == 401
    blocked = await api.client.post(
        "/auth/login", json={"email": "grace@example.com", "password": PASSWORD}
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    api.clock.advance(61)
    ok = await api.client.post(
        "/auth/login", json={"email": "grace@example.com", "password": PASSWORD}
    )
    assert ok.status_code == 200


async def test_refresh_rotates_and_reuse_revokes_the_family(api: Api) -> None:
    """A refresh token works once; presenting it again revokes every token of the login."""
    tokens = await api.register("heidi@example.com")
    first = await api.client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    me = await api.client.get("/auth/me", headers=bearer(rotated["access_token"]))
    assert me.status_code == 200

    reuse = await api.client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert reuse.status_code == 401
    assert "already used" in reuse.json()["detail"]
    # The family is gone: the rotated refresh token and its access token no longer work.
    later = await api.client.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert later.status_code == 401
    me = await api.client.get("/auth/me", headers=bearer(rotated["access_token"]))
    assert me.status_code == 401
    # Another login is another family and still works.
    other = await api.client.post(
        "/auth/login", json={"email": "heidi@example.com", "password": PASSWORD}
    )
    assert other.status_code == 200


async def test_logout_revokes_access_and_refresh_tokens(api: Api) -> None:
    """After logout neither the access token nor the refresh token of the session works."""
    tokens = await api.register("ivan@example.com")
    out = await api.client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    assert out.status_code == 200
    me = await api.client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 401
    refresh = await api.client.post(
        "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refresh.status_code == 401


def _forge(token: str, header: dict[str, object], payload_changes: dict[str, object]) -> str:
    _, body_b64, sig = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(body_b64 + "=" * (-len(body_b64) % 4)))
    body.update(payload_changes)

    def enc(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{enc(header)}.{enc(body)}.{sig}"


async def test_malformed_forged_and_expired_jwts_are_401(api: Api) -> None:
    """Garbage, alg:none, a changed payload, an unknown kid, a refresh token used as access
    token and an expired token are all 401 with a JSON reason."""
    tokens = await api.register("judy@example.com")
    access = tokens["access_token"]
    kid = jwt.get_unverified_header(access)["kid"]
    cases = {
        "garbage": "not-a-jwt",
        "alg none": _forge(access, {"alg": "none", "kid": kid, "typ": "JWT"}, {}),
        "tampered role": _forge(access, {"alg": "HS256", "kid": kid}, {"role": "admin"}),
        "unknown kid": _forge(access, {"alg": "HS256", "kid": "other"}, {}),
        "refresh as access": tokens["refresh_token"],
        "foreign key": jwt.encode(
            {"sub": "x", "typ": "access", "iss": "gatekeeper", "jti": "j", "iat": 1, "exp": 2**40},
            "another-secret-another-secret-12",
            algorithm="HS256",
            headers={"kid": kid},
        ),
    }
    for name, token in cases.items():
        response = await api.client.get("/auth/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.json()["error"] in ("invalid_token", "unauthorized"), name
    api.clock.advance(api.identity.codec.access_ttl + 1)
    expired = await api.client.get("/auth/me", headers=bearer(access))
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]


async def test_keys_rotate_without_logging_anyone_out(api: Api) -> None:
    """A token signed by the previous signing key still verifies after rotation via kid."""
    tokens = await api.register("kim@example.com")
    old_ring = api.identity.codec.keys
    new_ring = KeyRing.parse(
        "k2:identity-test-secret-rotated-000000,k1:identity-test-secret-0123456789abcdef"
    )
    api.identity.codec.keys = new_ring
    me = await api.client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    fresh = await api.client.post(
        "/auth/login", json={"email": "kim@example.com", "password": PASSWORD}
    )
    assert jwt.get_unverified_header(fresh.json()["access_token"])["kid"] == "k2"
    # A ring without k1 no longer accepts the old token.
    api.identity.codec.keys = KeyRing.parse("k2:identity-test-secret-rotated-000000")
    gone = await api.client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert gone.status_code == 401
    assert old_ring.signing.kid == "k1"
    assert TokenCodec(new_ring, api.clock).keys.kids == ["k1", "k2"]


async def test_api_key_is_shown_once_and_works_in_all_three_places(api: Api) -> None:
    """The key is returned at creation only, and authenticates as Bearer, X-API-Key and
    ?api_key=."""
    tokens = await api.register("leo@example.com")
    key = await api.new_key(tokens["access_token"], name="ci")
    secret = key["api_key"]
    assert secret.startswith(f"gk_{key['prefix']}_")
    listing = await api.client.get("/auth/api_keys", headers=bearer(tokens["access_token"]))
    assert secret not in listing.text
    assert listing.json()["keys"][0]["prefix"] == key["prefix"]
    for kwargs in (
        {"headers": bearer(secret)},
        {"headers": {"X-API-Key": secret}},
        {"params": {"api_key": secret}},
    ):
        me = await api.client.get("/auth/me", **kwargs)  # type: ignore[arg-type]
        assert me.status_code == 200, kwargs
        assert me.json()["via"] == "api_key"


async def test_creating_a_key_needs_a_user_token(api: Api) -> None:
    """No credentials is 401; an API key cannot mint more API keys."""
    none = await api.client.post("/auth/create_api_key", json={})
    assert none.status_code == 401
    tokens = await api.register("mia@example.com")
    key = await api.new_key(tokens["access_token"])
    via_key = await api.client.post("/auth/create_api_key", json={}, headers=bearer(key["api_key"]))
    assert via_key.status_code == 401


async def test_revoked_expired_and_unknown_keys_are_refused(api: Api) -> None:
    """A revoked key, an expired key and a made-up key get 401 with the reason."""
    tokens = await api.register("ned@example.com")
    access = tokens["access_token"]
    revoked = await api.new_key(access, name="old")
    short = await api.new_key(access, name="short", expires_in_days=1)
    r = await api.client.post(f"/auth/api_keys/{revoked['key_id']}/revoke", headers=bearer(access))
    assert r.status_code == 200
    gone = await api.client.get("/auth/me", headers={"X-API-Key": revoked["api_key"]})
    assert gone.status_code == 401
    assert "revoked" in gone.json()["detail"]
    assert (await api.client.get("/auth/me", headers={"X-API-Key": short["api_key"]})).is_success
    api.clock.advance(86400 + 1)
    expired = await api.client.get("/auth/me", headers={"X-API-Key": short["api_key"]})
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]
    made_up = short["api_key"][:-4] + "AAAA"
    unknown = await api.client.get("/auth/me", headers={"X-API-Key": made_up})
    assert unknown.status_code == 401


async def test_rotation_keeps_the_old_key_for_the_overlap(api: Api) -> None:
    """After rotation both keys work until the overlap ends; then only the new one."""
    tokens = await api.register("olga@example.com")
    access = tokens["access_token"]
    old = await api.new_key(access, name="svc")
    rotated = await api.client.post(
        f"/auth/api_keys/{old['key_id']}/rotate",
        json={"overlap_seconds": 600},
        headers=bearer(access),
    )
    assert rotated.status_code == 201
    new = rotated.json()
    assert new["name"] == "svc"
    for secret in (old["api_key"], new["api_key"]):
        assert (await api.client.get("/auth/me", headers={"X-API-Key": secret})).is_success
    api.clock.advance(601)
    assert (
        await api.client.get("/auth/me", headers={"X-API-Key": old["api_key"]})
    ).status_code == 401
    assert (await api.client.get("/auth/me", headers={"X-API-Key": new["api_key"]})).is_success


async def test_another_users_key_cannot_be_touched(api: Api) -> None:
    """Revoking or rotating someone else's key is a 404 (its existence is not revealed)."""
    alice = await api.register("pat@example.com")
    bob = await api.register("quinn@example.com")
    key = await api.new_key(alice["access_token"])
    r = await api.client.post(
        f"/auth/api_keys/{key['key_id']}/revoke", headers=bearer(bob["access_token"])
    )
    assert r.status_code == 404
    assert (await api.client.get("/auth/me", headers={"X-API-Key": key["api_key"]})).is_success


@pytest.mark.parametrize("payload", INJECTIONS)
async def test_injection_attempts_are_stored_and_returned_verbatim(api: Api, payload: str) -> None:
    """Hostile strings in the email local part and key name are data, never code."""
    local = "".join(c for c in payload if c != "@" and not c.isspace())[:40]
    tokens = await api.register(f"{local}@example.com")
    assert tokens["user"]["email"] == f"{local}@example.com".lower()
    key = await api.new_key(tokens["access_token"], name=payload)
    assert key["name"] == payload
    listing = await api.client.get("/auth/api_keys", headers=bearer(tokens["access_token"]))
    assert listing.json()["keys"][0]["name"] == payload
    login = await api.client.post(
        "/auth/login", json={"email": f"{local}@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200
    # The users table is intact (the DROP TABLE did not run).
    assert (await api.identity.users.list())[1] == 1


async def test_nul_characters_are_refused_not_a_server_error(api: Api) -> None:
    """A NUL byte (which PostgreSQL cannot store) is a 422 naming the problem, never a 5xx."""
    r = await api.client.post(
        "/auth/register", json={"email": "nul\u0000@example.com", "password": PASSWORD}
    )
    assert r.status_code == 422
    assert "NUL" in r.json()["detail"]
    tokens = await api.register("nul@example.com")
    r = await api.client.post(
        "/auth/create_api_key", json={"name": "a\u0000b"}, headers=bearer(tokens["access_token"])
    )
    assert r.status_code == 422


async def test_concurrent_refreshes_spend_the_token_exactly_once(api: Api) -> None:
    """Two simultaneous refreshes of one token: exactly one wins; the other counts as reuse."""
    tokens = await api.register("race@example.com")
    body = {"refresh_token": tokens["refresh_token"]}
    first, second = await asyncio.gather(
        api.client.post("/auth/refresh", json=body), api.client.post("/auth/refresh", json=body)
    )
    assert sorted([first.status_code, second.status_code]) == [200, 401]
