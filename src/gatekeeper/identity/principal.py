"""Who is calling: the principal a credential resolves to."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ADMIN_TOKEN_PRINCIPAL", "Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``via`` says how: ``"api_key"``, ``"jwt"`` or ``"admin_token"``. ``key_id`` is set when an
    API key was used; limits then count per key (the seeds' behaviour), otherwise per user.
    """

    user_id: str
    email: str
    role: str
    tier: str
    via: str
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def subject(self) -> str:
        """The limit subject: ``key:<id>`` for API keys, ``user:<id>`` otherwise."""
        return f"key:{self.key_id}" if self.key_id else f"user:{self.user_id}"

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        if self.via == "admin_token":
            return "admin-token"
        return f"user:{self.user_id} ({self.email})"


ADMIN_TOKEN_PRINCIPAL = Principal(
    user_id="", email="", role="admin", tier="enterprise", via="admin_token"
)
