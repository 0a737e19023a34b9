"""Password hashing (argon2id) and the rules a new password must meet.

Hashing is deliberately slow (tens of milliseconds of CPU): it runs in a worker thread so that
the event loop keeps serving other requests while one login is verified.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gatekeeper.errors import ConfigurationError

__all__ = ["MAX_PASSWORD_LENGTH", "MIN_PASSWORD_LENGTH", "Passwords", "password_problem"]

MIN_PASSWORD_LENGTH = 8
# argon2 itself accepts anything, but hashing megabytes on request is a cheap denial of service.
MAX_PASSWORD_LENGTH = 128
_COMMON = frozenset(
    {
        "password", "password1", "12345678", "123456789", "1234567890", "qwertyuiop",
        "iloveyou", "admin123", "letmein1", "welcome1", "abc12345", "passw0rd", "11111111",
        "00000000", "sunshine", "football", "baseball", "trustno1", "qwerty123", "changeme",
    }
)  # fmt: skip


def password_problem(password: str) -> str | None:
    """Why ``password`` is unacceptable, or ``None`` when it is fine."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"password must be at most {MAX_PASSWORD_LENGTH} characters"
    if password.lower() in _COMMON:
        return "password is too common"
    if len(set(password)) < 4:
        return "password must contain at least 4 different characters"
    return None


class Passwords:
    """argon2id with OWASP's minimum parameters by default (19 MiB, 2 passes, 1 lane)."""

    def __init__(self, *, time_cost: int = 2, memory_cost: int = 19 * 1024) -> None:
        if time_cost < 1 or memory_cost < 8:
            raise ConfigurationError("argon2 time_cost must be >= 1 and memory_cost >= 8 KiB")
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=1, type=Type.ID
        )
        # Verified against when the account does not exist, so that "no such user" costs as
        # much time as "wrong password" and timing does not reveal which accounts exist.
        self._dummy = self._hasher.hash("gatekeeper-dummy-password")

    async def hash(self, password: str) -> str:
        """The argon2id PHC string for ``password``."""
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; ``stored_hash=None`` burns the same time and says no."""
        target = self._dummy if stored_hash is None else stored_hash
        try:
            ok = await asyncio.to_thread(self._hasher.verify, target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return bool(ok) and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether the hash was made with older parameters and should be replaced."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True
