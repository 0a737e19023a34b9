"""Queue tokens: compact JWTs bound to tenant, user and ticket.

Two signers: HS256 with a shared secret (every replica holds it) and EdDSA (Ed25519) with a
private key, whose public half is published as a JWKS so that backends verify offline.

Verification is strict and cheap: the header segment must equal, byte for byte, the one this
signer produces (so ``alg: none``, an HS256/EdDSA confusion or a foreign ``kid`` fail before any
cryptography), then the signature, then the claims. The hot path is hand-rolled over ``hmac``
because status polls verify a token each and PyJWT's generality costs several times more.

Claims: ``iss`` ("gatekeeper"), ``aud`` (``wr:<tenant>``), ``sub`` (user id), ``tkt`` (ticket
number), ``jti`` (random), ``iat`` and ``exp`` (seconds), and on a *ready token* ``rdy``: until
when (epoch seconds) its holder was admitted when it was issued. A ready token is what lets an
admitted visitor in while the queue's store is unreachable (see ``WaitingRoomService.verify``).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import itertools
import json
import random
import re
import secrets
from typing import Any, NamedTuple, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatekeeper.errors import ConfigurationError, TokenError

__all__ = [
    "EdDSASigner",
    "HS256Signer",
    "QueueClaims",
    "Signer",
    "TokenCodec",
    "TokenExpired",
]

ISSUER = "gatekeeper"
VERIFIED_CACHE = 16_384  # ~400 B each: a few MB at most
REPLACE_ODDS = 8  # a full verified-token cache replaces an entry on one miss in this many


class TokenExpired(TokenError):
    """The token is authentic but past its ``exp``; ``claims`` holds what it said."""

    def __init__(self, claims: QueueClaims) -> None:
        super().__init__("token expired")
        self.claims = claims


class QueueClaims(NamedTuple):
    """What a queue token asserts (a tuple: built once per verification, on the hot path)."""

    tenant: str
    user: str
    ticket: int
    jti: str
    iat: int
    exp: int
    ready_until: int = 0
    """``rdy``: the end of the ready session this token was issued for (0: a queue token)."""


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
HEADS_CACHE = 1024  # tenants whose payload opening is kept formatted

# The exact payload ``issue`` writes when every string is plain (no escapes, no control
# characters) and every number is canonical: any match is valid JSON that json.loads would read
# to the same values, so an authentic payload of that shape skips the general parser.
_STR = rb'"([^"\\\x00-\x1f]*)"'
_INT = rb"(0|[1-9][0-9]*)"
_OWN_PAYLOAD = re.compile(
    rb'\{"iss":"gatekeeper","aud":"wr:' + _STR[1:] + rb',"sub":' + _STR + rb',"tkt":' + _INT
    + rb',"jti":' + _STR + rb',"iat":' + _INT + rb',"exp":' + _INT
    + rb'(?:,"rdy":' + _INT + rb")?\}\Z"
)  # fmt: skip
# How json.loads decodes a UTF-8 document (lone surrogates pass), for exact equivalence.
_UTF8, _SURR = "utf-8", "surrogatepass"
# Printable ASCII but the quote and the backslash: what json.dumps writes as itself.
_PLAIN = re.compile(r"[ !#-\[\]-~]*\Z")


def _json_str(value: str) -> str:
    """``json.dumps(value)``, without the encoder call for the common plain strings."""
    if _PLAIN.match(value):
        return f'"{value}"'
    return json.dumps(value)


def _b64(data: bytes) -> bytes:
    # binascii directly: base64.urlsafe_b64encode is two Python layers over it (two per token).
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    # binascii directly: base64.urlsafe_b64decode adds two layers of checks per call. Strict
    # mode refuses characters outside the alphabet instead of skipping them.
    padded = data.translate(_FROM_URLSAFE) + b"=" * (-len(data) % 4)
    return binascii.a2b_base64(padded, strict_mode=True)


class Signer(Protocol):
    """Signs and checks the ``header.payload`` part of a token."""

    header: bytes

    def sign(self, signing_input: bytes) -> bytes: ...

    def verify(self, signing_input: bytes, signature: bytes) -> bool: ...

    def jwks(self) -> dict[str, Any]: ...


class HS256Signer:
    """HMAC-SHA256 with a shared secret of at least 32 bytes."""

    def __init__(self, secret: bytes | str) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < 32:
            raise ConfigurationError("jwt secret must be at least 32 bytes for HS256")
        # HMAC (RFC 2104) with the key's inner and outer pad states hashed once: each token
        # then costs two copies and the message blocks, not a key schedule.
        block = hashlib.sha256(key).digest() if len(key) > 64 else key
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self.header = _b64(b'{"alg":"HS256","typ":"JWT"}')

    @classmethod
    def random(cls) -> HS256Signer:
        """A signer with a fresh secret: fine for one process (demo), useless across replicas."""
        return cls(secrets.token_bytes(32))

    def sign(self, signing_input: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(signing_input)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        return hmac.compare_digest(self.sign(signing_input), signature)

    def jwks(self) -> dict[str, Any]:
        """A shared secret is never published."""
        return {"keys": []}


class EdDSASigner:
    """Ed25519 signatures; the public key is published as a JWKS (RFC 8037)."""

    def __init__(self, private_key: Ed25519PrivateKey, kid: str = "wr-1") -> None:
        self._private = private_key
        self._public: Ed25519PublicKey = private_key.public_key()
        self.kid = kid
        self.header = _b64(
            json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": kid}, separators=(",", ":")).encode()
        )

    @classmethod
    def generate(cls, kid: str = "wr-1") -> EdDSASigner:
        return cls(Ed25519PrivateKey.generate(), kid)

    @classmethod
    def from_pem_file(cls, path: str, kid: str = "wr-1") -> EdDSASigner:
        """Load an Ed25519 private key (PKCS#8 PEM, unencrypted)."""
        try:
            with open(path, "rb") as handle:
                key = serialization.load_pem_private_key(handle.read(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"cannot load Ed25519 key from {path!r}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"key in {path!r} is not an Ed25519 private key")
        return cls(key, kid)

    def sign(self, signing_input: bytes) -> bytes:
        return self._private.sign(signing_input)

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            self._public.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True

    def jwks(self) -> dict[str, Any]:
        raw = self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw).decode(), "kid": self.kid}
        return {"keys": [{**jwk, "alg": "EdDSA", "use": "sig"}]}


class TokenCodec:
    """Issues and verifies queue tokens with one :class:`Signer`."""

    def __init__(self, signer: Signer, *, cache_size: int = VERIFIED_CACHE) -> None:
        self.signer = signer
        self._prefix = signer.header + b"."
        # jti = a random per-codec prefix + a counter: unique without a syscall per token.
        self._jti_prefix = secrets.token_hex(6)
        self._jti = itertools.count()
        self._verified: dict[str, QueueClaims] = {}
        # The cached tokens again, by slot. Visitors poll in a cycle, so dropping everything
        # (or the oldest) when full leaves nothing to hit once more visitors poll than the
        # cache holds. A full cache instead lets one miss in REPLACE_ODDS replace a random
        # slot: most cached tokens survive a whole cycle (close to size/visitors of polls
        # hit), and the tokens of visitors who left still age out.
        self._slots: list[str] = []
        self._cache_size = cache_size
        self._evict = random.Random(secrets.randbits(64)).randrange
        self._heads: dict[str, str] = {}

    def issue(
        self, tenant: str, user: str, ticket: int, *, now: float, ttl: int, ready_until: int = 0
    ) -> str:
        """A fresh token for ``ticket`` valid ``ttl`` seconds from ``now``; with
        ``ready_until``, a ready token (claim ``rdy``)."""
        iat = int(now)
        jti = f"{self._jti_prefix}{next(self._jti):06x}"
        # Hand-formatted compact JSON (strings escaped exactly as json.dumps does): the same
        # bytes json.dumps(payload) gives, at a fraction of the cost. The opening up to the
        # user is the same for every token of a tenant: formatted once.
        head = self._heads.get(tenant)
        if head is None:
            if len(self._heads) >= HEADS_CACHE:
                self._heads.clear()  # bounded: tenants are few, but not trusted to be
            head = f'{{"iss":"{ISSUER}","aud":{_json_str("wr:" + tenant)},"sub":'
            self._heads[tenant] = head
        ready = f',"rdy":{int(ready_until)}' if ready_until > 0 else ""
        payload = (
            f"{head}{_json_str(user)},"
            f'"tkt":{int(ticket)},"jti":"{jti}","iat":{iat},"exp":{iat + int(ttl)}{ready}}}'
        )
        signing_input = self._prefix + _b64(payload.encode())
        return (signing_input + b"." + _b64(self.signer.sign(signing_input))).decode()

    def decode(
        self, token: str, tenant: str, *, now: float, allow_expired: bool = False
    ) -> QueueClaims:
        """The claims of an authentic token for ``tenant``.

        Raises :class:`TokenError` if it is malformed, forged, for another tenant or another
        issuer, and :class:`TokenExpired` (carrying the claims) if it is authentic but expired,
        unless ``allow_expired``.
        """
        known = self._verified.get(token)
        if known is not None:
            # Visitors poll with the same token again and again: an exact string that passed
            # every check before needs only the tenant and expiry checks again.
            if known.tenant != tenant:
                raise TokenError("token was issued for another tenant")
            if known.exp <= now and not allow_expired:
                raise TokenExpired(known)
            return known
        if not token or len(token) > 4096:
            raise TokenError("token missing or too long")
        raw = token.encode("ascii", "replace")
        parts = raw.split(b".")
        if len(parts) != 3:
            raise TokenError("token is not a JWS compact serialization")
        header, body, signature = parts
        if header != self.signer.header:
            raise TokenError("token header does not match this issuer's algorithm and key")
        try:
            sig = _unb64(signature)
            payload = _unb64(body)
        except (binascii.Error, ValueError) as exc:
            raise TokenError("token is not valid base64url JSON") from exc
        if not self.signer.verify(header + b"." + body, sig):
            raise TokenError("token signature is invalid")
        own = _OWN_PAYLOAD.match(payload)
        if own is not None:
            aud, sub, tkt, jti, iat, exp, rdy = own.groups()
            try:
                claims = QueueClaims(
                    aud.decode(_UTF8, _SURR),
                    sub.decode(_UTF8, _SURR),
                    int(tkt),
                    jti.decode(_UTF8, _SURR),
                    int(iat),
                    int(exp),
                    int(rdy) if rdy is not None else 0,
                )
            except UnicodeDecodeError as exc:
                raise TokenError("token is not valid base64url JSON") from exc
            if claims.tenant != tenant:
                raise TokenError("token was issued for another tenant")
        else:
            claims = _general_claims(payload, tenant)
        self._remember(token, claims)
        if claims.exp <= now and not allow_expired:
            raise TokenExpired(claims)
        return claims

    def _remember(self, token: str, claims: QueueClaims) -> None:
        slots = self._slots
        if len(slots) < self._cache_size:
            slots.append(token)
        else:
            slot = self._evict(len(slots) * REPLACE_ODDS)
            if slot >= len(slots):
                return  # not cached this time (see __init__)
            del self._verified[slots[slot]]
            slots[slot] = token
        self._verified[token] = claims


def _general_claims(payload: bytes, tenant: str) -> QueueClaims:
    """The claims of an authentic payload of any JSON shape (escaped strings, other order)."""
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise TokenError("token is not valid base64url JSON") from exc
    if not isinstance(document, dict):
        raise TokenError("token payload is not an object")
    try:
        claims = QueueClaims(
            tenant=str(document["aud"]).removeprefix("wr:"),
            user=str(document["sub"]),
            ticket=int(document["tkt"]),
            jti=str(document["jti"]),
            iat=int(document["iat"]),
            exp=int(document["exp"]),
            ready_until=int(document.get("rdy", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenError(f"token lacks a valid claim: {exc}") from exc
    if document.get("iss") != ISSUER or document.get("aud") != f"wr:{tenant}":
        raise TokenError("token was issued for another tenant")
    return claims
