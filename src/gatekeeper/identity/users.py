"""Users: registration, credential checks, roles and tiers."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatekeeper.errors import AuthenticationError, Conflict, InvalidInput, NotFound
from gatekeeper.identity.cache import HotCache
from gatekeeper.identity.passwords import Passwords, password_problem
from gatekeeper.identity.tiers import DEFAULT_TIER, check_tier_name
from gatekeeper.persistence.db import Database
from gatekeeper.persistence.models import Tier, User
from gatekeeper.types import Clock

__all__ = ["ROLES", "UserInfo", "UserService", "at", "normalize_email", "user_info"]

ROLES = ("user", "admin")
# Deliberately loose: one "@", something on each side, a dot in the domain, no spaces.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_INVALID_LOGIN = "invalid email or password"


def at(clock: Clock) -> datetime:
    """The clock's current time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock.now(), UTC)


def normalize_email(email: object) -> str:
    """The canonical form of an address; :class:`InvalidInput` if it is not one."""
    if not isinstance(email, str) or len(email) > 254 or not _EMAIL.match(email.strip()):
        raise InvalidInput("email must be a valid address of at most 254 characters")
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as the API shows it (never the password hash)."""

    id: str
    email: str
    role: str
    tier: str
    disabled: bool
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.id,
            "email": self.email,
            "role": self.role,
            "tier": self.tier,
            "disabled": self.disabled,
            "created_at": self.created_at.isoformat(),
        }


def user_info(row: User) -> UserInfo:
    """The API's view of a user row."""
    return UserInfo(row.id, row.email, row.role, row.tier, row.disabled, row.created_at)


_info = user_info


class UserService:
    """Creates users and checks their credentials. ``cache`` holds API-key principals, which
    embed the user's tier and role: every change here invalidates them on all replicas."""

    def __init__(self, db: Database, passwords: Passwords, clock: Clock, cache: HotCache) -> None:
        self.db = db
        self.passwords = passwords
        self.clock = clock
        self.cache = cache

    async def register(self, email: str, password: str, *, role: str = "user") -> UserInfo:
        """A new user on the default tier; :class:`Conflict` if the email is taken."""
        row = await self.new_row(email, password, role=role)
        async with self.db.transaction() as session:
            await self.insert(session, row)
        return _info(row)

    async def new_row(self, email: str, password: str, *, role: str = "user") -> User:
        """A user row, checked and with its password hashed, not yet stored (see
        :meth:`insert`): the slow hashing happens outside any transaction."""
        address = normalize_email(email)
        problem = password_problem(password) if isinstance(password, str) else "is required"
        if problem is not None:
            raise InvalidInput(problem if problem.startswith("password") else f"password {problem}")
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}; got {role!r}")
        password_hash = await self.passwords.hash(password)
        now = at(self.clock)
        return User(
            id=uuid.uuid4().hex,
            email=address,
            password_hash=password_hash,
            role=role,
            tier=DEFAULT_TIER,
            disabled=False,
            created_at=now,
            updated_at=now,
        )

    async def insert(self, session: AsyncSession, row: User) -> UserInfo:
        """Store ``row`` in the caller's transaction; :class:`Conflict` if the email is taken."""
        exists = await session.scalar(select(func.count()).where(User.email == row.email))
        if exists:
            raise Conflict("a user with this email already exists")
        session.add(row)
        await session.flush()  # (rows that reference the user follow it in the transaction)
        return _info(row)

    async def authenticate(self, email: str, password: str) -> UserInfo:
        """The user if the password matches; the same :class:`AuthenticationError` for an
        unknown address, a wrong password and a disabled account (and about the same time)."""
        try:
            address = normalize_email(email)
        except InvalidInput:
            address = ""
        row = None
        if address:
            async with self.db.transaction() as session:
                row = await session.scalar(select(User).where(User.email == address))
        if not isinstance(password, str) or len(password) > 1024:
            password = ""
        ok = await self.passwords.verify(row.password_hash if row else None, password)
        if not ok or row is None or row.disabled:
            raise AuthenticationError(_INVALID_LOGIN)
        if self.passwords.needs_rehash(row.password_hash):
            await self._set_password_hash(row.id, await self.passwords.hash(password))
        return _info(row)

    async def _set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self.db.transaction() as session:
            row = await session.get(User, user_id)
            if row is not None:
                row.password_hash = password_hash

    async def get(self, user_id: str) -> UserInfo:
        async with self.db.transaction() as session:
            row = await session.get(User, user_id)
        if row is None:
            raise NotFound(f"user {user_id!r} does not exist")
        return _info(row)

    async def find(self, email: str) -> UserInfo:
        address = normalize_email(email)
        async with self.db.transaction() as session:
            row = await session.scalar(select(User).where(User.email == address))
        if row is None:
            raise NotFound("no user has this email")
        return _info(row)

    async def list(self, *, limit: int = 100, offset: int = 0) -> tuple[list[UserInfo], int]:
        """A page of users (oldest first) and the total count."""
        async with self.db.transaction() as session:
            total = await session.scalar(select(func.count()).select_from(User)) or 0
            rows = (
                await session.scalars(
                    select(User).order_by(User.created_at, User.id).limit(limit).offset(offset)
                )
            ).all()
        return [_info(r) for r in rows], total

    async def update(
        self,
        user_id: str,
        *,
        tier: str | None = None,
        role: str | None = None,
        disabled: bool | None = None,
    ) -> UserInfo:
        """Change a user's tier, role or status; effective on every replica within a second."""
        if role is not None and role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}; got {role!r}")
        async with self.db.transaction() as session:
            row = await session.get(User, user_id)
            if row is None:
                raise NotFound(f"user {user_id!r} does not exist")
            if tier is not None:
                check_tier_name(tier)
                if await session.get(Tier, tier) is None:
                    raise NotFound(f"tier {tier!r} does not exist")
                row.tier = tier
            if role is not None:
                row.role = role
            if disabled is not None:
                row.disabled = disabled
            row.updated_at = at(self.clock)
            info = _info(row)
        # API-key principals embed tier and role: drop them everywhere, and the user's tier.
        await self.cache.invalidate("apikey")
        await self.cache.invalidate("user", user_id)
        return info
