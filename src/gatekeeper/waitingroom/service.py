"""The waiting room's behaviour, independent of HTTP: enqueue, status, verify, finish, config.

Routes (``api.py``), Server-Sent Events (``sse.py``), the gateway gate (``gate.py``) and tests
all call this class; it owns the rules that make the queue fair and honest:

* a user holds at most one place (duplicate enqueue returns the current place, empty ``jwt``);
* tokens are bound to tenant, user and ticket; an expired but authentic token is renewed by
  ``status`` while the place is still live; once admitted, ``status`` hands out a *ready
  token* (claim ``rdy``); ``verify`` needs a current token and a ready session, or, while the
  store is unreachable, a valid ready token (``degraded``); ``finish`` ends the session so that
  the token never verifies again;
* ``business_id`` values are resolved by :class:`~gatekeeper.waitingroom.access.TenantAccess`
  (a public id costs nothing; a secret key names its tenant); the HTTP layer decides which
  calls need a secret key;
* per-IP limits from the tenant's config guard enqueue and status (429 + ``Retry-After``);
* every answer carries an ETA with a range and the polling interval the server wants.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from typing import TYPE_CHECKING, Any, NamedTuple

from gatekeeper.errors import (
    AuthenticationError,
    BadRequest,
    GatekeeperError,
    RateLimitExceeded,
    StorageError,
    TokenError,
)
from gatekeeper.limits.policy import Algorithm, Check, Policy, Rate
from gatekeeper.waitingroom.access import UNKNOWN, TenantAccess
from gatekeeper.waitingroom.eta import Eta, estimate, eta_for, measured_period
from gatekeeper.waitingroom.store import QueueStats, TicketState
from gatekeeper.waitingroom.tokens import QueueClaims, TokenExpired

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from gatekeeper.limits.decision import Decision
    from gatekeeper.types import Clock
    from gatekeeper.waitingroom.config import TenantConfig, WaitingRoomSettings
    from gatekeeper.waitingroom.config_repository import CachedConfigs
    from gatekeeper.waitingroom.store import WaitingRoomStore
    from gatekeeper.waitingroom.tokens import TokenCodec

__all__ = [
    "EnqueueAnswer",
    "Eta",
    "InvalidRequest",
    "StatusAnswer",
    "Verification",
    "WaitingRoomService",
    "eta_for",
]

MAX_ID = 256
STATS_TTL = 1.0
CHECKS_CACHE = 8192  # per-IP limit checks kept built (a visitor polls from one address)


class InvalidRequest(BadRequest):
    """The request lacks a required value or carries a malformed one (-> 400)."""


class EnqueueAnswer(NamedTuple):
    """What ``enqueue`` tells the client (the seed's fields plus ready and ETA)."""

    jwt: str
    position: int | None
    message: str
    ready: bool
    eta: Eta | None


class Verification(NamedTuple):
    """``ready``: admitted now. ``degraded``: decided from the ready token alone, because the
    store was unreachable (see :meth:`WaitingRoomService.verification`)."""

    ready: bool
    degraded: bool


class StatusAnswer(NamedTuple):
    """What ``status`` tells the client (the seed's fields plus ETA)."""

    warning_msg: str | None
    jwt_token: str
    position: int | None
    ready: bool
    eta: Eta | None


class WaitingRoomService:
    """One replica's waiting room. ``limiter`` (a ``gatekeeper.limits.Limiter``) enforces the
    per-IP limits; ``None`` disables them. ``metrics`` is an observability ``Metrics`` or None."""

    def __init__(
        self,
        store: WaitingRoomStore,
        configs: CachedConfigs,
        codec: TokenCodec,
        clock: Clock,
        settings: WaitingRoomSettings,
        *,
        limiter: Any = None,
        metrics: Any = None,
        access: TenantAccess | None = None,
    ) -> None:
        self.store = store
        self.configs = configs
        self.codec = codec
        self.clock = clock
        self.settings = settings
        self.limiter = limiter
        self.metrics = metrics
        self.access = access or TenantAccess(configs, clock, ttl=configs.ttl)
        self._policies: dict[tuple[str, int, int], Policy] = {}
        self._checks: dict[tuple[str, str, str, int, int], tuple[Check]] = {}
        self._stats: dict[str, tuple[float, QueueStats, float]] = {}
        self._stats_reads: dict[str, asyncio.Future[tuple[float, QueueStats, float]]] = {}

    def _cached_eta(
        self, tenant: str, position: int, config: TenantConfig, now: float
    ) -> Eta | None:
        # The usual case, without a coroutine: the tenant's stats are cached and fresh.
        entry = self._stats.get(tenant)
        if entry is None or entry[0] <= self.clock.monotonic():
            return None
        return estimate(position, entry[1].next_tick, entry[2], config, self.settings, now)

    async def _eta(self, tenant: str, position: int, config: TenantConfig, now: float) -> Eta:
        # ETAs need the tick schedule and history, which change once per tick: reading them
        # (and deriving the measured period) once per second per tenant keeps a round trip and
        # the history walk off every enqueue and poll.
        # One read per tenant at a time: at expiry, every request of that moment would
        # otherwise send its own (measured: ~60 reads/s instead of 1 at 64 connections).
        # While it runs, the others answer from the entry it replaces, a moment older.
        entry = self._stats.get(tenant)
        if entry is None or (
            entry[0] <= self.clock.monotonic() and tenant not in self._stats_reads
        ):
            entry = await self._read_stats(tenant, now)
        return estimate(position, entry[1].next_tick, entry[2], config, self.settings, now)

    def _read_stats(self, tenant: str, now: float) -> Awaitable[tuple[float, QueueStats, float]]:
        reading = self._stats_reads.get(tenant)
        if reading is None:
            reading = asyncio.ensure_future(self._fetch_stats(tenant, now))
            self._stats_reads[tenant] = reading
            reading.add_done_callback(lambda done: self._stats_read(tenant, done))
        # Shielded: a caller that gives up does not cancel the read the others wait for.
        return asyncio.shield(reading)

    async def _fetch_stats(self, tenant: str, now: float) -> tuple[float, QueueStats, float]:
        stats = await self.store.stats(tenant, now)
        entry = (self.clock.monotonic() + STATS_TTL, stats, measured_period(stats))
        self._stats[tenant] = entry
        return entry

    def _stats_read(self, tenant: str, done: asyncio.Future[Any]) -> None:
        if self._stats_reads.get(tenant) is done:
            del self._stats_reads[tenant]
        if not done.cancelled():
            done.exception()  # retrieved: its waiters got it already

    # -- tenants and config -------------------------------------------------------------------

    def _fresh_config(self, tenant: str | None) -> TenantConfig | None:
        # Enqueue and status: a known tenant's fresh cached config without a coroutine.
        if tenant and len(tenant) <= 64:
            return self.configs.fresh(tenant)
        return None

    async def tenant_config(self, tenant: str | None) -> TenantConfig:
        """The config of a known tenant (by public id); :class:`AuthenticationError` for
        anything else."""
        if not tenant or len(tenant) > 64:
            raise AuthenticationError(UNKNOWN)
        config = await self.configs.get(tenant)
        if config is None:
            raise AuthenticationError(UNKNOWN)
        return config

    async def _tenant(self, value: str | None) -> tuple[str, TenantConfig]:
        # Off the hot path: a value not in the config cache, maybe a secret key.
        tenant, _ = await self.access.tenant(value)
        return tenant, await self.tenant_config(tenant)

    async def update_config(self, tenant: str, changes: dict[str, Any]) -> TenantConfig:
        """Apply a partial update (bounds re-checked as a whole; ValidationError names fields)."""
        current = await self.tenant_config(tenant)
        return await self.configs.save(tenant, current.updated(changes))

    # -- per-IP limits ------------------------------------------------------------------------

    def _policy(self, kind: str, limit: int, interval: int) -> Policy:
        key = (kind, limit, interval)
        policy = self._policies.get(key)
        if policy is None:
            # GCRA with a burst of `limit`: a client may spend its whole allowance at once,
            # then earns it back evenly over the interval; exact, with no window boundary
            # where 2x slips through. The rate is part of the name so that a config change
            # starts fresh instead of reinterpreting the old state.
            policy = Policy(
                f"wr-{kind}-{limit}-{interval}",
                Rate(limit, float(interval)),
                algorithm=Algorithm.GCRA,
            )
            self._policies[key] = policy
        return policy

    def _ip_checks(
        self, kind: str, tenant: str, ip: str, limit: int, interval: int
    ) -> tuple[Check]:
        # Built once per address and limit, not per request: a visitor polls from one address.
        key = (kind, tenant, ip, limit, interval)
        checks = self._checks.get(key)
        if checks is None:
            if len(self._checks) >= CHECKS_CACHE:
                self._checks.clear()  # bounded: addresses come and go
            policy = self._policy(kind, limit, interval)
            checks = self._checks[key] = (Check(policy, f"wr:{tenant}:ip:{ip}"),)
        return checks

    # -- the queue ----------------------------------------------------------------------------

    async def enqueue(self, tenant: str, user: str | None, ip: str | None = None) -> EnqueueAnswer:
        """Take a place in line for ``user`` (or return the place they hold)."""
        config = self._fresh_config(tenant)
        if config is None:
            tenant, config = await self._tenant(tenant)
        if not user or len(user) > MAX_ID:
            raise InvalidRequest("user_id header is required (at most 256 characters)")
        limiter = self.limiter
        if limiter is not None and ip:
            # Awaited here, not in a helper coroutine: one frame less on every request.
            decision = await limiter.decide(
                self._ip_checks(
                    "enqueue", tenant, ip, config.ip_enqueue_limit, config.ip_enqueue_limit_interval
                )
            )
            if not decision.allowed:
                raise RateLimitExceeded(decision)
        now = self.clock.now()
        result = await self.store.enqueue(tenant, user, now, self.settings.grace_seconds)
        if result.state is TicketState.READY:
            return EnqueueAnswer("", None, "User is already ready.", True, None)
        position = result.position or 1
        eta = self._cached_eta(tenant, position, config, now) or await self._eta(
            tenant, position, config, now
        )
        if result.duplicate:
            return EnqueueAnswer("", position, "User is already in the queue.", False, eta)
        token = self.codec.issue(
            tenant, user, result.ticket, now=now, ttl=config.jwt_expiry_seconds
        )
        if self.metrics is not None:
            self.metrics.token_issued(tenant)
        return EnqueueAnswer(token, position, "User enqueued successfully.", False, eta)

    def _claims(self, tenant: str, token: str | None, *, allow_expired: bool) -> QueueClaims:
        try:
            claims = self.codec.decode(
                token or "", tenant, now=self.clock.now(), allow_expired=allow_expired
            )
        except TokenExpired:
            self._verified(tenant, "expired")
            raise
        except TokenError:
            self._verified(tenant, "invalid")
            raise
        return claims

    def _verified(self, tenant: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.token_verified(tenant, outcome)

    async def status(self, tenant: str, token: str | None, ip: str | None = None) -> StatusAnswer:
        """Where the token's holder stands; renews the token if it expired (still authentic)."""
        config = self._fresh_config(tenant)
        if config is None:
            tenant, config = await self._tenant(tenant)
        limiter = self.limiter
        limited: Awaitable[Decision] | None = None
        if limiter is not None and ip:
            limited = limiter.decide(
                self._ip_checks(
                    "status",
                    tenant,
                    ip,
                    config.ip_status_polling_limit,
                    config.ip_status_polling_limit_interval,
                )
            )
        # The limit check and the queue read leave in the same loop turn, so their answers
        # usually land together: one wait per poll instead of two. The limit's verdict still
        # decides first, as if the read had never been asked.
        try:
            claims = self._claims(tenant, token, allow_expired=True)
        except GatekeeperError:
            if limited is not None and not (decision := await limited).allowed:
                raise RateLimitExceeded(decision) from None
            raise
        now = self.clock.now()
        pending = self.store.status(
            tenant, claims.ticket, claims.user, now, self.settings.grace_seconds
        )
        if limited is not None and not (decision := await limited).allowed:
            _abandon(pending)
            raise RateLimitExceeded(decision)
        st = await pending
        if st.state is TicketState.GONE:
            return StatusAnswer(
                "User not found in the queue (finished, expired or left); enqueue again.",
                token or "",
                None,
                False,
                None,
            )
        fresh = token or ""
        if st.state is TicketState.READY:
            if not claims.ready_until or claims.exp - now < 10:
                fresh = self._ready_token(tenant, claims, config, st.ready_until or now, now)
            return StatusAnswer(None, fresh, None, True, None)
        if claims.exp - now < 10:
            ttl = config.jwt_expiry_seconds
            fresh = self.codec.issue(tenant, claims.user, claims.ticket, now=now, ttl=ttl)
            if self.metrics is not None:
                self.metrics.token_issued(tenant)
        position = st.position or 1
        eta = self._cached_eta(tenant, position, config, now) or await self._eta(
            tenant, position, config, now
        )
        return StatusAnswer(None, fresh, position, False, eta)

    def _ready_token(
        self,
        tenant: str,
        claims: QueueClaims,
        config: TenantConfig,
        ready_until: float,
        now: float,
    ) -> str:
        # A ready token says until when its holder is admitted (claim rdy) and expires no later:
        # what lets an admitted visitor in while the store is unreachable (verification()).
        ttl = max(1, min(config.jwt_expiry_seconds, math.ceil(ready_until - now)))
        token = self.codec.issue(
            tenant, claims.user, claims.ticket, now=now, ttl=ttl, ready_until=int(ready_until)
        )
        if self.metrics is not None:
            self.metrics.token_issued(tenant)
        return token

    async def verify(self, tenant: str, token: str | None) -> bool:
        """True if the token is current, authentic, for this tenant, and its session is ready
        (see :meth:`verification`, which also says whether the store was consulted)."""
        return (await self.verification(tenant, token)).ready

    async def verification(self, tenant: str, token: str | None) -> Verification:
        """Is the token's holder admitted right now?

        Normally the store decides. While it is unreachable (timeout, error, open breaker), an
        authentic, unexpired *ready token* (claim ``rdy`` in the future) is still accepted, and
        the answer says ``degraded``: admitted visitors are not thrown out by an outage. Any
        other token gets the store's error (503): nobody new is let in without the queue.
        """
        await self.tenant_config(tenant)
        claims = self._claims(tenant, token, allow_expired=False)
        now = self.clock.now()
        try:
            ready = await self.store.verify(tenant, claims.ticket, claims.user, now)
        except StorageError:
            if claims.ready_until > now:
                self._verified(tenant, "degraded")
                return Verification(True, True)
            raise
        self._verified(tenant, "valid" if ready else "not_ready")
        return Verification(ready, False)

    async def finish(self, tenant: str, token: str | None) -> bool:
        """End the token's ready session (True), or report that it was not ready (False).

        An expired but authentic token may finish: revoking never grants anything.
        """
        await self.tenant_config(tenant)
        claims = self._claims(tenant, token, allow_expired=True)
        return await self.store.finish(tenant, claims.ticket, claims.user, self.clock.now())


def _abandon(pending: Awaitable[Any]) -> None:
    """Let an awaitable nobody will await end quietly: a coroutine not started is closed, a
    future's eventual failure is marked as seen."""
    if inspect.iscoroutine(pending):
        pending.close()
    elif isinstance(pending, asyncio.Future):
        pending.add_done_callback(_seen)


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
