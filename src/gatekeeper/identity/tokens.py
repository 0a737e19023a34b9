"""JWT access and refresh tokens: issuing, verifying, and the key ring behind them.

Defences, each against a known JWT attack:

- the algorithm is pinned per key: a token is checked with the algorithm of the key its ``kid``
  names, never the one its header claims (no ``alg: none``, no HS/RS confusion);
- every token carries a ``kid``; the ring holds one signing key and any number of older keys
  that still verify, so keys rotate without logging anyone out;
- ``typ`` separates access from refresh tokens (a refresh token is no access token);
- expiry is checked against the injected clock, with the claims required to be present.

Refresh-token rotation and family revocation are stateful and live in ``identity.sessions``.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from gatekeeper.errors import ConfigurationError, TokenError
from gatekeeper.types import Clock

__all__ = ["ISSUER", "Claims", "KeyRing", "SigningKey", "TokenCodec"]

ISSUER = "gatekeeper"
_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_MIN_SECRET = 32
_MIN_CONFIGURED = 16


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One HMAC key: its id, its secret, and the only algorithm it may be used with."""

    kid: str
    secret: bytes
    algorithm: str = "HS256"

    def __post_init__(self) -> None:
        if self.algorithm not in _ALGORITHMS:
            raise ConfigurationError(
                f"JWT key {self.kid!r}: algorithm {self.algorithm!r} is not one of "
                f"{', '.join(sorted(_ALGORITHMS))}"
            )
        if len(self.secret) < _MIN_SECRET:
            raise ConfigurationError(
                f"JWT key {self.kid!r}: the secret must be at least {_MIN_SECRET} bytes"
            )
        if not self.kid or len(self.kid) > 64:
            raise ConfigurationError("JWT key id must be 1 to 64 characters")


class KeyRing:
    """The signing key plus older keys that still verify (for rotation)."""

    def __init__(self, signing: SigningKey, *older: SigningKey) -> None:
        self.signing = signing
        self._keys = {k.kid: k for k in (*older, signing)}
        if len(self._keys) != 1 + len(older):
            raise ConfigurationError("JWT key ids must be unique")

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """``"kid1:secret1,kid2:secret2"``: the first key signs, the others only verify.

        Secrets need at least 16 characters; the HMAC key is derived from each.

        A bare ``"secret"`` gets a key id derived from its hash, so that every replica
        configured with the same secret agrees on it.
        """
        keys: list[SigningKey] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            kid, sep, secret = part.partition(":")
            if not sep:
                kid, secret = hashlib.sha256(part.encode()).hexdigest()[:8], part
            secret = secret.strip()
            if len(secret) < _MIN_CONFIGURED:
                raise ConfigurationError(
                    f"JWT key {kid.strip()!r}: the secret must be at least "
                    f"{_MIN_CONFIGURED} characters"
                )
            # Derived, not used raw: other components (the waiting room) may sign with the
            # same configured secret, and their tokens must never verify here.
            derived = hashlib.sha256(b"gatekeeper-identity-v1:" + secret.encode()).digest()
            keys.append(SigningKey(kid.strip(), derived))
        if not keys:
            raise ConfigurationError("the JWT secret is empty")
        return cls(keys[0], *keys[1:])

    @classmethod
    def generate(cls) -> KeyRing:
        """A random key for one process (the embedded mode: tokens die with the process)."""
        return cls(SigningKey(f"local-{secrets.token_hex(4)}", secrets.token_bytes(32)))

    def get(self, kid: object) -> SigningKey:
        if not isinstance(kid, str) or kid not in self._keys:
            raise TokenError("token was signed with an unknown key")
        return self._keys[kid]

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified contents of a token."""

    subject: str
    token_type: str
    jti: str
    issued_at: int
    expires_at: int
    extra: dict[str, Any]


class TokenCodec:
    """Signs and verifies Gatekeeper's JWTs against a :class:`KeyRing` and a clock."""

    def __init__(
        self,
        keys: KeyRing,
        clock: Clock,
        *,
        access_ttl: int = 900,
        refresh_ttl: int = 7 * 86400,
    ) -> None:
        if access_ttl <= 0 or refresh_ttl <= 0:
            raise ConfigurationError("token lifetimes must be positive seconds")
        self.keys = keys
        self.clock = clock
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def issue(self, subject: str, token_type: str, **extra: Any) -> tuple[str, Claims]:
        """A signed token of ``token_type`` ("access" or "refresh") for ``subject``."""
        now = int(self.clock.now())
        ttl = self.access_ttl if token_type == "access" else self.refresh_ttl
        jti = extra.pop("jti", None) or uuid.uuid4().hex
        payload = {
            "iss": ISSUER,
            "sub": subject,
            "typ": token_type,
            "jti": jti,
            "iat": now,
            "exp": now + ttl,
            **extra,
        }
        key = self.keys.signing
        token = jwt.encode(
            payload, key.secret, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "JWT"}
        )
        return token, Claims(subject, token_type, jti, now, now + ttl, extra)

    def verify(self, token: str, token_type: str) -> Claims:
        """The claims of a valid, unexpired token of ``token_type``; :class:`TokenError`
        (with a message safe to show the client) for anything else."""
        if not token or len(token) > 8192:
            raise TokenError("token is missing or too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("token is malformed") from exc
        key = self.keys.get(header.get("kid"))
        if header.get("alg") != key.algorithm:
            raise TokenError("token algorithm does not match its key")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key.secret,
                algorithms=[key.algorithm],
                issuer=ISSUER,
                options={
                    "require": ["exp", "iat", "sub", "typ", "jti", "iss"],
                    # Time is checked below against the injected clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise TokenError("token signature is invalid") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"token is invalid: {exc}") from exc
        if payload["typ"] != token_type:
            raise TokenError(f"expected an {token_type} token, got a {payload['typ']!r} token")
        expires_at = payload["exp"]
        if not isinstance(expires_at, int) or expires_at <= self.clock.now():
            raise TokenError("token has expired")
        extra = {
            k: v for k, v in payload.items() if k not in {"iss", "sub", "typ", "jti", "iat", "exp"}
        }
        return Claims(
            str(payload["sub"]),
            token_type,
            str(payload["jti"]),
            int(payload["iat"]),
            expires_at,
            extra,
        )
