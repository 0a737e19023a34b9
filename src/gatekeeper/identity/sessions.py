"""Login sessions: token pairs, refresh-token rotation with family revocation, logout.

Every login starts a *family*. Each refresh spends the presented refresh token (it works once)
and issues a new pair in the same family. A spent token presented again means it was copied:
the whole family is revoked, the thief's tokens and the user's alike. Revoked families and
logged-out access tokens are also remembered in a revocation list (Redis, or memory in the
embedded mode) until the longest access token could have expired, so that access tokens of a
revoked family stop working at once rather than at their expiry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from gatekeeper.errors import TokenError
from gatekeeper.identity.principal import Principal
from gatekeeper.identity.tokens import Claims, TokenCodec
from gatekeeper.identity.users import UserInfo, UserService, at
from gatekeeper.persistence.db import Database
from gatekeeper.persistence.models import RefreshToken
from gatekeeper.redis_client import is_cluster, translate_redis_errors
from gatekeeper.types import Clock

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RevocationList", "SessionService", "TokenPair"]


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    user: UserInfo

    def as_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_expires_in": self.refresh_expires_in,
            "user_id": self.user.id,
            "tier": self.user.tier,
        }


class RevocationList:
    """Ids (token ``jti`` or family id) revoked until a given time.

    In Redis every id is a key ``{<prefix>:revoked}:<id>``: one hash tag for all of them, so
    that the check of a token's ``jti`` and family is one ``MGET`` on one node of a Cluster
    (ids of one token hash to different slots otherwise: CROSSSLOT).
    """

    def __init__(self, redis: Redis | None, clock: Clock, *, prefix: str = "gk") -> None:
        self.redis = redis
        self.clock = clock
        self.prefix = prefix
        self._local: dict[str, float] = {}
        # On one Redis, ids revoked under the names used before the hash tag are read too,
        # until they expire (an access token's lifetime after an upgrade): a rolling upgrade
        # must not bring a revoked token back. A cluster never held them.
        self._legacy = redis is not None and not is_cluster(redis)

    def _key(self, ident: str) -> str:
        return f"{{{self.prefix}:revoked}}:{ident}"

    async def revoke(self, ident: str, until: float) -> None:
        ttl = max(1, int(until - self.clock.now()) + 1)
        if self.redis is not None:
            with translate_redis_errors("revoking"):
                await self.redis.set(self._key(ident), str(until), ex=ttl)
        else:
            self._local[ident] = until
            if len(self._local) > 100_000:  # forget the expired ones
                now = self.clock.now()
                self._local = {k: v for k, v in self._local.items() if v > now}

    async def any_revoked(self, *idents: str) -> bool:
        now = self.clock.now()
        if self.redis is not None:
            keys = [self._key(i) for i in idents]
            if self._legacy:
                keys += [f"{self.prefix}:revoked:{i}" for i in idents]
            with translate_redis_errors("reading revocations"):
                values = await self.redis.mget(keys)
            return any(v is not None and float(v) > now for v in values)
        return any(self._local.get(i, 0.0) > now for i in idents)


class SessionService:
    """Issues, rotates and revokes token pairs."""

    def __init__(
        self,
        db: Database,
        codec: TokenCodec,
        users: UserService,
        revoked: RevocationList,
        clock: Clock,
    ) -> None:
        self.db = db
        self.codec = codec
        self.users = users
        self.revoked = revoked
        self.clock = clock

    async def start(self, user: UserInfo) -> TokenPair:
        """A pair in a new family (a login)."""
        return await self._issue(user, uuid.uuid4().hex)

    def new_pair(self, user: UserInfo) -> tuple[TokenPair, RefreshToken]:
        """A pair in a new family and the refresh token's row, not yet stored: the caller adds
        the row in its own transaction (registration stores the user and it together)."""
        return self._pair(user, uuid.uuid4().hex)

    def _pair(self, user: UserInfo, family: str) -> tuple[TokenPair, RefreshToken]:
        access, _ = self.codec.issue(
            user.id, "access", role=user.role, tier=user.tier, email=user.email, fam=family
        )
        refresh, claims = self.codec.issue(user.id, "refresh", fam=family)
        row = RefreshToken(
            jti=claims.jti,
            family_id=family,
            user_id=user.id,
            issued_at=datetime.fromtimestamp(claims.issued_at, UTC),
            expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
        )
        pair = TokenPair(access, refresh, self.codec.access_ttl, self.codec.refresh_ttl, user)
        return pair, row

    async def _issue(self, user: UserInfo, family: str) -> TokenPair:
        pair, row = self._pair(user, family)
        async with self.db.transaction() as session:
            session.add(row)
        return pair

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Spend ``refresh_token`` for a new pair; reuse of a spent one revokes its family."""
        claims = self.codec.verify(refresh_token, "refresh")
        now = at(self.clock)
        async with self.db.transaction() as session:
            # Atomic "spend once": of two concurrent refreshes exactly one updates the row.
            spent = await session.execute(
                update(RefreshToken)
                .where(
                    RefreshToken.jti == claims.jti,
                    RefreshToken.used_at.is_(None),
                    RefreshToken.revoked_at.is_(None),
                )
                .values(used_at=now)
            )
            spent_now = getattr(spent, "rowcount", 0) == 1
            row = await session.get(RefreshToken, claims.jti)
        if row is None:
            raise TokenError("refresh token is unknown")
        if not spent_now:
            if row.revoked_at is None:
                await self.revoke_family(row.family_id)
                raise TokenError(
                    "refresh token was already used: every session of this login is revoked"
                )
            raise TokenError("refresh token has been revoked")
        user = await self.users.get(row.user_id)
        if user.disabled:
            await self.revoke_family(row.family_id)
            raise TokenError("the user is disabled")
        return await self._issue(user, row.family_id)

    async def revoke_family(self, family: str) -> None:
        """Revoke every refresh token of ``family`` and its outstanding access tokens."""
        async with self.db.transaction() as session:
            await session.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id == family, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=at(self.clock))
            )
        await self.revoked.revoke(f"fam:{family}", self.clock.now() + self.codec.access_ttl)

    async def verify_access(self, token: str) -> tuple[Principal, Claims]:
        """The principal of a valid, unrevoked access token."""
        claims = self.codec.verify(token, "access")
        family = str(claims.extra.get("fam", ""))
        if await self.revoked.any_revoked(f"jti:{claims.jti}", f"fam:{family}"):
            raise TokenError("token has been revoked")
        principal = Principal(
            user_id=claims.subject,
            email=str(claims.extra.get("email", "")),
            role=str(claims.extra.get("role", "user")),
            tier=str(claims.extra.get("tier", "free")),
            via="jwt",
        )
        return principal, claims

    async def logout(self, claims: Claims) -> None:
        """End the session of an access token: its family and the token itself."""
        family = claims.extra.get("fam")
        if isinstance(family, str) and family:
            await self.revoke_family(family)
        await self.revoked.revoke(f"jti:{claims.jti}", float(claims.expires_at))
