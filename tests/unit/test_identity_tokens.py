"""JWT codec: pinned algorithms, kid rotation, token types, expiry on the injected clock."""

from __future__ import annotations

import jwt
import pytest

from gatekeeper.errors import ConfigurationError, TokenError
from gatekeeper.identity.tokens import KeyRing, SigningKey, TokenCodec
from gatekeeper.testing import FakeClock

SECRET = "unit-test-secret-0123456789abcdef"


def codec(clock: FakeClock, ring: str = f"a:{SECRET}") -> TokenCodec:
    return TokenCodec(KeyRing.parse(ring), clock, access_ttl=60, refresh_ttl=600)


def test_round_trip_carries_claims_and_kid(fake_clock: FakeClock) -> None:
    """An issued access token verifies with its subject, type and extra claims."""
    c = codec(fake_clock)
    token, issued = c.issue("user-1", "access", role="admin", tier="basic")
    assert jwt.get_unverified_header(token)["kid"] == "a"
    claims = c.verify(token, "access")
    assert claims.subject == "user-1"
    assert claims.extra == {"role": "admin", "tier": "basic"}
    assert claims.expires_at == issued.expires_at == int(fake_clock.now()) + 60


def test_expiry_follows_the_injected_clock(fake_clock: FakeClock) -> None:
    """A token is valid until its exp on the injected clock, then 'expired'."""
    c = codec(fake_clock)
    token, _ = c.issue("u", "access")
    fake_clock.advance(59)
    c.verify(token, "access")
    fake_clock.advance(1)
    with pytest.raises(TokenError, match="expired"):
        c.verify(token, "access")


def test_type_confusion_is_refused(fake_clock: FakeClock) -> None:
    """A refresh token is not an access token and vice versa."""
    c = codec(fake_clock)
    refresh, _ = c.issue("u", "refresh")
    with pytest.raises(TokenError, match="expected an access token"):
        c.verify(refresh, "access")


@pytest.mark.parametrize("alg", ["none", "HS512", "RS256"])
def test_header_algorithm_must_match_the_key(fake_clock: FakeClock, alg: str) -> None:
    """Whatever alg the header claims, only the key's own algorithm is accepted."""
    c = codec(fake_clock)
    token, _ = c.issue("u", "access")
    _, payload, signature = token.split(".")
    header = jwt.utils.base64url_encode(
        f'{{"alg":"{alg}","kid":"a","typ":"JWT"}}'.encode()
    ).decode()
    with pytest.raises(TokenError):
        c.verify(f"{header}.{payload}.{signature}", "access")
    with pytest.raises(TokenError):
        c.verify(f"{header}.{payload}.", "access")


def test_missing_claims_are_refused(fake_clock: FakeClock) -> None:
    """A correctly signed token without the required claims is still invalid."""
    c = codec(fake_clock)
    key = c.keys.signing
    token = jwt.encode({"sub": "u"}, key.secret, algorithm="HS256", headers={"kid": "a"})
    with pytest.raises(TokenError, match="invalid"):
        c.verify(token, "access")


def test_rotation_signs_with_the_first_key_and_verifies_with_all(fake_clock: FakeClock) -> None:
    """After adding a new first key, old tokens verify and new ones carry the new kid;
    dropping the old key ends the old tokens."""
    old = codec(fake_clock)
    token, _ = old.issue("u", "access")
    rotated = codec(fake_clock, f"b:{SECRET}-new,a:{SECRET}")
    rotated.verify(token, "access")
    fresh, _ = rotated.issue("u", "access")
    assert jwt.get_unverified_header(fresh)["kid"] == "b"
    with pytest.raises(TokenError, match="unknown key"):
        codec(fake_clock, f"b:{SECRET}-new").verify(token, "access")


def test_a_bare_secret_gets_a_stable_kid_and_is_domain_separated(fake_clock: FakeClock) -> None:
    """Replicas given the same bare secret agree on the kid; a token signed with the raw
    secret (e.g. by another component) does not verify."""
    assert KeyRing.parse(SECRET).signing.kid == KeyRing.parse(SECRET).signing.kid
    ring = KeyRing.parse(SECRET)
    raw = jwt.encode(
        {"sub": "u", "typ": "access", "iss": "gatekeeper", "jti": "j", "iat": 1, "exp": 2**40},
        SECRET,
        algorithm="HS256",
        headers={"kid": ring.signing.kid},
    )
    with pytest.raises(TokenError, match="signature"):
        TokenCodec(ring, fake_clock).verify(raw, "access")


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "empty"), ("a:short", "at least 16"), (f"a:{SECRET},a:{SECRET}x", "unique")],
)
def test_bad_key_configuration_is_rejected(text: str, problem: str) -> None:
    """Empty rings, short secrets and duplicate kids are configuration errors."""
    with pytest.raises(ConfigurationError, match=problem):
        KeyRing.parse(text)


def test_signing_key_pins_hmac_algorithms() -> None:
    """Only HS256/384/512 keys exist; asymmetric names are refused up front."""
    with pytest.raises(ConfigurationError, match="RS256"):
        SigningKey("k", b"x" * 32, "RS256")


def test_garbage_and_oversized_tokens(fake_clock: FakeClock) -> None:
    """Non-JWT text and absurdly long tokens are TokenError, not crashes."""
    c = codec(fake_clock)
    for token in ("", "abc", "a.b.c", "x" * 10_000):
        with pytest.raises(TokenError):
            c.verify(token, "access")
