"""Queue tokens: issued claims, strict verification, expiry, both signers."""

from __future__ import annotations

import base64
import hmac
import json

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.errors import ConfigurationError, TokenError
from gatekeeper.waitingroom import tokens
from gatekeeper.waitingroom.tokens import EdDSASigner, HS256Signer, TokenCodec, TokenExpired

SECRET = "s" * 32
NOW = 1_700_000_000.0


def _flip(token: str, index: int) -> str:
    """Change one base64url character away from the end (the last one has padding bits)."""
    return token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_hs256_token_is_a_standard_jwt_with_bound_claims() -> None:
    """A standard library (PyJWT) reads our token: tenant, user, ticket, jti, expiry."""
    token = TokenCodec(HS256Signer(SECRET)).issue("shop", "alice", 7, now=NOW, ttl=120)
    claims = pyjwt.decode(
        token, SECRET, algorithms=["HS256"], audience="wr:shop", options={"verify_exp": False}
    )
    assert claims["sub"] == "alice"
    assert claims["tkt"] == 7
    assert claims["exp"] - claims["iat"] == 120
    assert len(claims["jti"]) >= 18


def test_decode_round_trip_and_unique_jti() -> None:
    """Decoding returns what was issued; two tokens for the same ticket differ by jti."""
    codec = TokenCodec(HS256Signer(SECRET))
    a = codec.decode(codec.issue("shop", "u", 1, now=NOW, ttl=60), "shop", now=NOW)
    b = codec.decode(codec.issue("shop", "u", 1, now=NOW, ttl=60), "shop", now=NOW)
    assert (a.tenant, a.user, a.ticket, a.exp) == ("shop", "u", 1, int(NOW) + 60)
    assert a.jti != b.jti


def test_expired_token_raises_with_its_claims_unless_allowed() -> None:
    """Past exp: TokenExpired carries the authentic claims; allow_expired returns them."""
    codec = TokenCodec(HS256Signer(SECRET))
    token = codec.issue("shop", "u", 3, now=NOW, ttl=60)
    with pytest.raises(TokenExpired) as info:
        codec.decode(token, "shop", now=NOW + 60)
    assert info.value.claims.ticket == 3
    assert codec.decode(token, "shop", now=NOW + 600, allow_expired=True).ticket == 3


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: _flip(t, len(t) - 10),  # signature
        lambda t: _b64(b'{"alg":"none","typ":"JWT"}') + "." + t.split(".")[1] + ".",
        lambda t: _b64(b'{"alg":"HS512","typ":"JWT"}') + "." + ".".join(t.split(".")[1:]),
        lambda t: (
            t.split(".")[0] + "." + _b64(json.dumps({"sub": "x"}).encode()) + "." + t.split(".")[2]
        ),
        lambda t: t + ".extra",
        lambda t: "not-a-token",
        lambda t: "",
        lambda t: "a" * 5000,
    ],
)
def test_tampered_tokens_are_rejected(mangle) -> None:  # type: ignore[no-untyped-def]
    """Changed signature, alg none/other, swapped payload, garbage: TokenError."""
    codec = TokenCodec(HS256Signer(SECRET))
    token = codec.issue("shop", "u", 1, now=NOW, ttl=60)
    with pytest.raises(TokenError):
        codec.decode(mangle(token), "shop", now=NOW)


def test_other_tenant_and_other_key_are_rejected() -> None:
    """A token for tenant A fails for tenant B; one signed with another secret fails."""
    codec = TokenCodec(HS256Signer(SECRET))
    token = codec.issue("a", "u", 1, now=NOW, ttl=60)
    with pytest.raises(TokenError):
        codec.decode(token, "b", now=NOW)
    with pytest.raises(TokenError):
        TokenCodec(HS256Signer("t" * 32)).decode(token, "a", now=NOW)


def test_eddsa_tokens_verify_with_the_published_jwks() -> None:
    """EdDSA tokens verify with the JWKS public key (PyJWT as an independent verifier)."""
    signer = EdDSASigner.generate("k1")
    token = TokenCodec(signer).issue("shop", "u", 5, now=NOW, ttl=60)
    jwk = signer.jwks()["keys"][0]
    assert (jwk["kty"], jwk["crv"], jwk["kid"]) == ("OKP", "Ed25519", "k1")
    key = pyjwt.PyJWK(jwk)
    claims = pyjwt.decode(
        token, key.key, algorithms=["EdDSA"], audience="wr:shop", options={"verify_exp": False}
    )
    assert claims["tkt"] == 5
    with pytest.raises(TokenError):  # an HS256 token is not accepted by an EdDSA codec
        TokenCodec(signer).decode(
            TokenCodec(HS256Signer(SECRET)).issue("shop", "u", 5, now=NOW, ttl=60), "shop", now=NOW
        )


def test_eddsa_key_from_pem_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A PKCS#8 PEM Ed25519 key loads; anything else is a ConfigurationError."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "wr.pem"
    path.write_bytes(pem)
    signer = EdDSASigner.from_pem_file(str(path))
    assert (
        TokenCodec(signer)
        .decode(TokenCodec(signer).issue("s", "u", 1, now=NOW, ttl=60), "s", now=NOW)
        .user
        == "u"
    )
    path.write_text("nonsense")
    with pytest.raises(ConfigurationError):
        EdDSASigner.from_pem_file(str(path))


def test_short_secret_is_refused() -> None:
    """HS256 secrets shorter than 32 bytes are a configuration error."""
    with pytest.raises(ConfigurationError):
        HS256Signer("short")
    assert HS256Signer(SECRET).jwks() == {"keys": []}


def test_cached_verification_still_checks_tenant_and_expiry() -> None:
    """A token decoded before is served from the cache, still bound to tenant and expiry."""
    codec = TokenCodec(HS256Signer(SECRET))
    token = codec.issue("a", "u", 1, now=NOW, ttl=60)
    assert codec.decode(token, "a", now=NOW).ticket == 1
    assert codec.decode(token, "a", now=NOW + 1).ticket == 1
    with pytest.raises(TokenError):
        codec.decode(token, "b", now=NOW)
    with pytest.raises(TokenExpired):
        codec.decode(token, "a", now=NOW + 60)
    with pytest.raises(TokenError):  # one changed character: another, unverified string
        codec.decode(_flip(token, len(token) - 10), "a", now=NOW)


def _signed(payload: bytes, signer: HS256Signer) -> str:
    """A token over an arbitrary payload, signed with ``signer`` (an authentic foreign shape)."""
    signing_input = signer.header + b"." + _b64(payload).encode()
    return (signing_input + b"." + _b64(signer.sign(signing_input)).encode()).decode()


@given(user=st.text(max_size=40), tenant=st.text(min_size=1, max_size=20))
@settings(max_examples=300, deadline=None)
def test_issued_payload_is_byte_for_byte_json_dumps(user: str, tenant: str) -> None:
    """The hand-formatted payload equals json.dumps' bytes and decodes back, for any strings."""
    codec = TokenCodec(HS256Signer(SECRET))
    token = codec.issue(tenant, user, 42, now=NOW, ttl=60)
    body = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert (
        base64.urlsafe_b64decode(token.split(".")[1] + "==")
        == json.dumps(body, separators=(",", ":")).encode()
    )
    claims = TokenCodec(HS256Signer(SECRET)).decode(token, tenant, now=NOW)
    assert (claims.tenant, claims.user, claims.ticket, claims.jti) == (
        tenant,
        user,
        42,
        body["jti"],
    )


@given(user=st.text(max_size=40), ready_until=st.integers(min_value=0, max_value=2**40))
@settings(max_examples=200, deadline=None)
def test_ready_tokens_carry_rdy_and_read_back_alike_on_both_paths(
    user: str, ready_until: int
) -> None:
    """A ready token's payload (claim rdy, absent when 0) is json.dumps' bytes, and decodes to
    the same claims fresh (fast or general parser) and from the verified-token cache."""
    codec = TokenCodec(HS256Signer(SECRET))
    token = codec.issue("shop", user, 3, now=NOW, ttl=60, ready_until=ready_until)
    raw = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    body = json.loads(raw)
    assert raw == json.dumps(body, separators=(",", ":")).encode()
    assert body.get("rdy", 0) == ready_until
    assert ("rdy" in body) == (ready_until > 0)
    fresh = TokenCodec(HS256Signer(SECRET)).decode(token, "shop", now=NOW)
    assert fresh.ready_until == ready_until
    assert codec.decode(token, "shop", now=NOW) == fresh
    # The general parser reads rdy too (another key order).
    reordered = json.dumps({"rdy": ready_until, **body}, separators=(",", ":")).encode()
    signer = HS256Signer(SECRET)
    assert TokenCodec(signer).decode(_signed(reordered, signer), "shop", now=NOW) == fresh


@pytest.mark.parametrize(
    ("payload", "user"),
    [
        # Another key order, escaped strings, raw UTF-8: the general JSON path reads them.
        (
            b'{"sub":"bob","aud":"wr:shop","iss":"gatekeeper","tkt":9,"jti":"j","iat":1,'
            b'"exp":9999999999}',
            "bob",
        ),
        (
            b'{"iss":"gatekeeper","aud":"wr:shop","sub":"a\\"b\\u00e9","tkt":9,"jti":"j",'
            b'"iat":1,"exp":9999999999}',
            'a"b\u00e9',
        ),
        (
            '{"iss":"gatekeeper","aud":"wr:shop","sub":"\u00e9","tkt":9,"jti":"j","iat":1,'
            '"exp":9999999999}'.encode(),
            "\u00e9",
        ),
    ],
)
def test_authentic_payloads_of_other_shapes_decode_like_json(payload: bytes, user: str) -> None:
    """Signed payloads not in the issuer's exact layout still decode, to json.loads' values."""
    signer = HS256Signer(SECRET)
    claims = TokenCodec(signer).decode(_signed(payload, signer), "shop", now=NOW)
    assert (claims.user, claims.ticket, claims.exp) == (user, 9, 9_999_999_999)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"iss":"gatekeeper","aud":"wr:shop","sub":"u","tkt":09,"jti":"j","iat":1,"exp":2}',
        b'{"iss":"gatekeeper","aud":"wr:shop","sub":"u\x01","tkt":9,"jti":"j","iat":1,"exp":2}',
        b'{"iss":"other","aud":"wr:shop","sub":"u","tkt":9,"jti":"j","iat":1,"exp":2}',
        b'{"iss":"gatekeeper","aud":"wr:shop","sub":"\xff","tkt":9,"jti":"j","iat":1,"exp":2}',
        b'["gatekeeper"]',
    ],
)
def test_authentic_but_invalid_payloads_are_rejected(payload: bytes) -> None:
    """Correctly signed, but invalid JSON, a foreign issuer or a non-object: TokenError."""
    signer = HS256Signer(SECRET)
    with pytest.raises(TokenError):
        TokenCodec(signer).decode(_signed(payload, signer), "shop", now=NOW, allow_expired=True)


@given(index=st.integers(min_value=0, max_value=10_000))
@settings(max_examples=200, deadline=None)
def test_any_changed_character_is_rejected(index: int) -> None:
    """Changing any one character of a token (header, payload or signature) is rejected."""
    codec = TokenCodec(HS256Signer(SECRET))
    token = codec.issue("shop", "alice", 7, now=NOW, ttl=60)
    at = index % (len(token) - 1)  # the last character carries padding bits
    if token[at] == ".":
        return
    with pytest.raises(TokenError):
        TokenCodec(HS256Signer(SECRET)).decode(_flip(token, at), "shop", now=NOW)


@pytest.mark.parametrize("size", [32, 63, 64, 65, 200])
def test_hs256_signature_is_standard_hmac_sha256(size: int) -> None:
    """Precomputed-pad HMAC equals hmac.digest for keys below, at and above the block size."""
    key = bytes(range(size))
    signer = HS256Signer(key)
    for message in (b"", b"a.b", b"x" * 1000):
        assert signer.sign(message) == hmac.digest(key, message, "sha256")
        assert signer.verify(message, hmac.digest(key, message, "sha256"))
        assert not signer.verify(message, hmac.digest(key + b"!", message, "sha256"))


class _CountingSigner(HS256Signer):
    """Counts signature checks (cache misses)."""

    checks = 0

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        self.checks += 1
        return super().verify(signing_input, signature)


def test_verified_cache_is_bounded_and_keeps_hitting_past_its_size() -> None:
    """With more polling visitors than cache slots, the cache stays at its size and still
    spares a good share of the checks (dropping everything when full would spare none)."""
    signer = _CountingSigner(SECRET)
    codec = TokenCodec(signer, cache_size=100)
    tokens = [codec.issue("shop", f"u{i}", i, now=NOW, ttl=60) for i in range(300)]
    for token in tokens:  # the first cycle: every token checked once
        codec.decode(token, "shop", now=NOW)
    assert signer.checks == 300
    for _ in range(5):
        for token in tokens:
            assert codec.decode(token, "shop", now=NOW).user == f"u{tokens.index(token)}"
    assert len(codec._verified) == len(codec._slots) == 100
    assert set(codec._slots) == set(codec._verified)
    hits = 5 * 300 - (signer.checks - 300)
    # At most 1/3 can hit (100 of 300 cached); ~1/4 expected. Clearing when full would give
    # ~0, replacing a random entry on every miss ~1/18.
    assert hits > 5 * 300 * 0.15
    expired = codec.issue("shop", "late", 1, now=NOW - 120, ttl=60)
    for _ in range(50):  # cached or not, an expired token is refused every time
        with pytest.raises(TokenExpired):
            codec.decode(expired, "shop", now=NOW)


def test_one_codec_issues_for_many_tenants_each_bound_to_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The payload opening kept per tenant never leaks into another tenant's tokens, also
    after the kept openings are dropped for being too many."""
    monkeypatch.setattr(tokens, "HEADS_CACHE", 3)
    codec = TokenCodec(HS256Signer(SECRET))
    tenants = ["a", 'q"uote', "b", "caf\u00e9", "a", "c", "d", "b"]
    for round_ in range(2):
        for i, tenant in enumerate(tenants):
            token = codec.issue(tenant, f"user-{i}", i, now=NOW, ttl=60)
            claims = pyjwt.decode(
                token,
                SECRET,
                algorithms=["HS256"],
                audience=f"wr:{tenant}",
                issuer="gatekeeper",
                options={"verify_exp": False},  # NOW is a fixed past instant
            )
            assert (claims["sub"], claims["tkt"]) == (f"user-{i}", i), round_
            assert TokenCodec(HS256Signer(SECRET)).decode(token, tenant, now=NOW).tenant == tenant
