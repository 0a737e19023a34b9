"""The identity facade: every identity service wired together, plus credential resolution.

Built once per process from the shared resources (database, Redis, limiter, clock) by the
identity component, and published to other components as ``context.identity``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import AuthenticationError, PermissionDenied
from gatekeeper.identity.api_keys import ApiKeyService, parse_key
from gatekeeper.identity.audit import AuditLog
from gatekeeper.identity.bans import BanList, BanRules
from gatekeeper.identity.blocklists import IpRules
from gatekeeper.identity.cache import HotCache
from gatekeeper.identity.passwords import Passwords
from gatekeeper.identity.principal import ADMIN_TOKEN_PRINCIPAL, Principal
from gatekeeper.identity.sessions import RevocationList, SessionService, TokenPair
from gatekeeper.identity.tiers import TierService
from gatekeeper.identity.tokens import KeyRing, TokenCodec
from gatekeeper.identity.usage import RequestLog, UsageCounters
from gatekeeper.identity.users import UserService, user_info
from gatekeeper.limits.policy import Policy
from gatekeeper.persistence.db import Database
from gatekeeper.types import Clock, EventEmitter

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gatekeeper.limits.limiter import Limiter

__all__ = ["Identity", "IdentityOptions"]


@dataclass(frozen=True)
class IdentityOptions:
    """Tunables of the identity layer (defaults follow the seeds)."""

    admin_token: str | None = None
    keys: KeyRing | None = None
    access_ttl: int = 900
    refresh_ttl: int = 7 * 86400
    redis_prefix: str = "gk"
    cache_ttl: float = 30.0
    anonymous_rate: str = "100/minute"
    login_ip_rate: str = "20/minute"
    login_account_rate: str = "5/minute"
    register_ip_rate: str = "10/minute"
    bans: BanRules = field(default_factory=BanRules)
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19 * 1024


class Identity:
    """Users, sessions, keys, tiers, lists, bans, usage and audit of one process."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        limiter: Limiter,
        redis: Redis | None = None,
        options: IdentityOptions | None = None,
    ) -> None:
        opts = options or IdentityOptions()
        self.options = opts
        self.db = db
        self.clock = clock
        self.limiter = limiter
        self.redis = redis
        prefix = opts.redis_prefix
        self.cache = HotCache(
            redis, channel=f"{prefix}:identity:invalidate", ttl=opts.cache_ttl, clock=clock
        )
        self.passwords = Passwords(
            time_cost=opts.argon2_time_cost, memory_cost=opts.argon2_memory_kib
        )
        self.codec = TokenCodec(
            opts.keys or KeyRing.generate(),
            clock,
            access_ttl=opts.access_ttl,
            refresh_ttl=opts.refresh_ttl,
        )
        self.tiers = TierService(db, self.cache)
        self.users = UserService(db, self.passwords, clock, self.cache)
        self.api_keys = ApiKeyService(db, clock, self.cache)
        self.sessions = SessionService(
            db, self.codec, self.users, RevocationList(redis, clock, prefix=prefix), clock
        )
        self.audit = AuditLog(db, clock)
        self.ip_rules = IpRules(db, clock, self.cache)
        self.bans = BanList(redis, clock, opts.bans, prefix=prefix)
        self.usage = UsageCounters(redis, clock, prefix=prefix)
        self.request_log = RequestLog(redis, clock, prefix=prefix)
        self.anonymous_policy = Policy.parse("anon-ip", opts.anonymous_rate)
        self.login_ip_policy = Policy.parse("login-ip", opts.login_ip_rate)
        self.login_account_policy = Policy.parse("login-account", opts.login_account_rate)
        self.register_ip_policy = Policy.parse("register-ip", opts.register_ip_rate)
        # Where bans, blocks and tier changes are reported (set by the component at start).
        self.events: EventEmitter | None = None
        # Told of every failed login (client address, account): abuse detection counts them.
        # Each must only queue (a login answer never waits for it).
        self.login_failure_hooks: list[Callable[[str, str], None]] = []

    def emit(self, type: str, data: dict[str, Any], subject: str | None = None) -> None:
        """Report an event when an emitter is connected (else nothing)."""
        if self.events is not None:
            self.events.emit(type, data, subject=subject)

    async def start(self) -> None:
        await self.cache.start()

    def login_failed(self, ip: str, account: str) -> None:
        """Report a failed login of ``account`` from ``ip`` to the hooks."""
        for hook in self.login_failure_hooks:
            hook(ip, account)

    async def stop(self) -> None:
        await self.cache.stop()

    def is_admin_token(self, token: str | None) -> bool:
        expected = self.options.admin_token
        if not expected or not token:
            return False
        return hmac.compare_digest(token.encode(), expected.encode())

    async def authenticate(self, bearer: str | None, api_key: str | None) -> Principal:
        """The principal behind the presented credentials (admin token, API key or JWT).

        A bearer that looks like an API key is treated as one, so clients may send keys as
        ``Authorization: Bearer gk_...``.
        """
        if bearer is not None:
            if self.is_admin_token(bearer):
                return ADMIN_TOKEN_PRINCIPAL
            if parse_key(bearer) is not None:
                return await self.api_keys.resolve(bearer)
            principal, _ = await self.sessions.verify_access(bearer)
            return principal
        if api_key is not None:
            return await self.api_keys.resolve(api_key)
        raise AuthenticationError("credentials required: a Bearer token or an API key")

    async def require_admin(self, bearer: str | None, api_key: str | None) -> Principal:
        """An admin principal, or 401 (no/bad credentials) / 403 (not an admin).

        The role is re-read from the database: a demoted admin loses access at once even
        while holding a token that still says ``admin``.
        """
        principal = await self.authenticate(bearer, api_key)
        if principal.via == "admin_token":
            return principal
        user = await self.users.get(principal.user_id)
        if user.role != "admin" or user.disabled:
            raise PermissionDenied("this endpoint needs the admin role or the admin token")
        return principal

    async def register(self, email: str, password: str) -> TokenPair:
        """A new account on the default tier and its first session, committed in ONE
        transaction: a process killed meanwhile leaves both or neither (never a user who
        cannot log in with the tokens they were never sent)."""
        row = await self.users.new_row(email, password)
        pair, token = self.sessions.new_pair(user_info(row))
        async with self.db.transaction() as session:
            await self.users.insert(session, row)
            session.add(token)
        return pair

    async def current_tier(self, principal: Principal) -> str:
        """The principal's tier now. API-key principals are cached already fresh; a JWT
        carries the tier of its issue time, so its user's tier is looked up (cached, and
        invalidated on every replica when an admin changes it)."""
        if principal.via != "jwt":
            return principal.tier

        async def load() -> str:
            return (await self.users.get(principal.user_id)).tier

        return await self.cache.get_or_load("user", principal.user_id, load)

    async def policies_for(self, principal: Principal) -> tuple[Policy, ...]:
        """The limit policies of the principal's current tier."""
        return await self.tiers.policies(await self.current_tier(principal))
