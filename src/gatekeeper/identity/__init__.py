"""Who is who: users, tokens, API keys, tiers, lists, bans, usage, and the admin's levers."""

from __future__ import annotations

from gatekeeper.identity.cache import HotCache
from gatekeeper.identity.component import IdentityComponent
from gatekeeper.identity.guard import Guard, Verdict
from gatekeeper.identity.principal import Principal
from gatekeeper.identity.service import Identity, IdentityOptions
from gatekeeper.identity.tokens import KeyRing, SigningKey

__all__ = [
    "Guard",
    "HotCache",
    "Identity",
    "IdentityComponent",
    "IdentityOptions",
    "KeyRing",
    "Principal",
    "SigningKey",
    "Verdict",
]
