"""Who may do what with a tenant: the rule, in one place.

``business_id`` carries either the tenant's public id or one of its secret keys
(``tenants.py``):

==========================================  ===============================================
enqueue, status, events, hosted page        the public id (or a secret key)
verify, finish, ``GET``/``POST /config``    a secret key, or the public id with the admin
                                            token (``Authorization: Bearer <token>``);
                                            the public id alone is 403 naming what is needed
==========================================  ===============================================

A secret key is found by its prefix (read through a cache, ``ttl`` seconds per entry, misses
included) and checked against its digest in constant time; a rotated-out key is refused once
its overlap has ended. A public id costs nothing here: the hot paths never call this module
for one.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from gatekeeper.errors import AuthenticationError, PermissionDenied
from gatekeeper.waitingroom.readthrough import ReadThrough
from gatekeeper.waitingroom.tenants import SECRET_PREFIX, digest, is_secret, parse_secret

if TYPE_CHECKING:
    from gatekeeper.types import Clock
    from gatekeeper.waitingroom.config_repository import CachedConfigs
    from gatekeeper.waitingroom.tenants import TenantKey

__all__ = ["SecretKeyRequired", "TenantAccess", "bearer_of"]

UNKNOWN = "missing or unknown business_id"


class SecretKeyRequired(PermissionDenied):
    """A public id was presented where the tenant's secret key is needed (403; the answer
    names the key needed: ``"needed": "secret_key"``)."""

    problem_members = {"needed": "secret_key"}

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs the tenant's secret key as business_id "
            f"({SECRET_PREFIX}...), or the admin token (Authorization: Bearer); "
            "the public id is not enough"
        )


def bearer_of(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


class TenantAccess:
    """Resolves ``business_id`` values to tenants and decides what they may do."""

    def __init__(
        self,
        configs: CachedConfigs,
        clock: Clock,
        *,
        admin_token: str | None = None,
        ttl: float = 2.0,
    ) -> None:
        self.configs = configs
        self.clock = clock
        self.admin_token = admin_token or None
        self._keys: ReadThrough[str, TenantKey] = ReadThrough(self._load, clock, ttl)

    async def _load(self, prefix: str) -> TenantKey | None:
        # Late-bound: the component may swap the repository (database down at start).
        return await self.configs.repository.find_key(prefix)

    async def tenant(self, value: str | None) -> tuple[str, bool]:
        """``(public id, by secret key)`` for a ``business_id`` value. A public id is returned
        as is (its existence is the caller's to check); a bad or expired key is 401."""
        if not value or not is_secret(value):
            return value or "", False
        prefix = parse_secret(value)
        key = None if prefix is None else await self._keys.get(prefix)
        if key is None or not hmac.compare_digest(key.key_hash, digest(value)):
            raise AuthenticationError("unknown secret key in business_id")
        if not key.valid_at(self.clock.now()):
            raise AuthenticationError("this secret key has expired (it was rotated)")
        return key.tenant, True

    def is_admin(self, authorization: str | None) -> bool:
        """Does the ``Authorization`` header carry the admin token? (Constant time.)"""
        token = bearer_of(authorization)
        expected = self.admin_token
        if token is None or expected is None:
            return False
        return hmac.compare_digest(token.encode(), expected.encode())

    async def private(self, value: str | None, authorization: str | None, what: str) -> str:
        """The tenant a backend-only call (``what``) may act on: by its secret key, or by its
        public id with the admin token. 401 for an unknown tenant, 403 for a public id alone."""
        tenant, by_secret = await self.tenant(value)
        if by_secret or self.is_admin(authorization):
            return tenant
        if not tenant or len(tenant) > 64 or await self.configs.get(tenant) is None:
            raise AuthenticationError(UNKNOWN)
        raise SecretKeyRequired(what)

    def forget(self, prefix: str) -> None:
        """Drop a cached key (after a rotation here: seen here at once)."""
        self._keys.forget(prefix)
