"""The detector: queues observations on the request path, evaluates them in the background.

``answered`` (the gateway's accounting, once per answered request) and ``login_failed`` (the
identity's login) only append to a bounded queue: the request never waits for Redis. A
background task takes what queued, counts it in one batch (the sliding counters through the
limiter, the distinct counters in one pipelined round trip), and acts on every subject that
reached a threshold: it lists the finding, and when the list says it is new (one replica
only), emits ``abuse.detected`` and, if the rule says so, bans the address or key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gatekeeper.abuse.allow import AllowList
from gatekeeper.abuse.counters import SlidingCounters
from gatekeeper.abuse.distinct import DistinctCounters
from gatekeeper.abuse.flags import LISTED, NEW, FlaggedList
from gatekeeper.abuse.networks import network_of
from gatekeeper.abuse.patterns import Finding, Rule
from gatekeeper.types import Clock, EventEmitter

__all__ = ["Bans", "Detector", "DetectorStats"]

logger = logging.getLogger("gatekeeper.abuse")

_PATH_BYTES = 256  # longer paths are counted by their beginning (bounded member size)
# A subject flagged here is not re-listed for this long (a storm past its threshold would
# otherwise cost a script call per observation); bounded like the list itself.
_RECENT_SECONDS = 10.0
_RECENT_MAX = 10_000
_ANSWERED = 0
_LOGIN = 1


class Bans(Protocol):
    """Where flagged subjects are banned (``gatekeeper.identity.bans.BanList``)."""

    async def offence(self, subject: str) -> float:
        """One offence of ``subject`` now; the ban imposed in seconds."""
        ...


@dataclass
class DetectorStats:
    """Counters since start (cheap integer increments)."""

    observed: int = 0
    dropped: int = 0
    evaluated: int = 0
    batches: int = 0
    findings: int = 0
    flagged: int = 0
    banned: int = 0
    errors: int = 0
    by_pattern: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "by_pattern": dict(self.by_pattern)}


class Detector:
    """Observes answered requests and failed logins; flags, reports and bans abusers.

    ``rules`` maps each enabled pattern to its :class:`Rule`. ``bans`` is the identity's
    ``BanList`` (None: nothing is banned). ``events`` returns the current emitter (the events
    component may start after this one).
    """

    def __init__(
        self,
        rules: Mapping[str, Rule],
        *,
        sliding: SlidingCounters,
        distinct: DistinctCounters,
        flags: FlaggedList,
        clock: Clock,
        allow: AllowList | None = None,
        bans: Bans | None = None,
        events: Callable[[], EventEmitter | None] = lambda: None,
        queue_max: int = 10_000,
        batch_delay: float = 0.1,
        evaluate_timeout: float = 5.0,
    ) -> None:
        self.rules = dict(rules)
        self.sliding = sliding
        self.distinct = distinct
        self.flags = flags
        self.clock = clock
        self.allow = allow or AllowList()
        self.bans = bans
        self.events = events
        self.queue_max = queue_max
        self.batch_delay = batch_delay
        self.evaluate_timeout = evaluate_timeout
        self.stats = DetectorStats()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._recent: dict[tuple[str, str], float] = {}  # (pattern, subject) -> until
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # What answered requests matter: the statuses of the enabled patterns, and keys.
        statuses: set[int] = set()
        if "scanning" in self.rules:
            statuses |= {401, 404}
        if "retry_after_ignored" in self.rules:
            statuses.add(429)
        self._statuses = frozenset(statuses)
        self._keys = "keys_per_ip" in self.rules or "networks_per_key" in self.rules
        self._logins = any(p.startswith("credential_stuffing") for p in self.rules)

    # -- the request path: queue only -----------------------------------------------------

    def answered(self, ip: str, path: str, status: int, key_id: str | None) -> None:
        """One answered request (``key_id``: the API key it authenticated with, if any)."""
        if status in self._statuses or (key_id is not None and self._keys):
            self._put((_ANSWERED, ip, path, status, key_id))

    def login_failed(self, ip: str, account: str) -> None:
        """One failed login of ``account`` from ``ip``."""
        if self._logins:
            self._put((_LOGIN, ip, account))

    def _put(self, observation: tuple[Any, ...]) -> None:
        queue = self._queue
        if len(queue) >= self.queue_max:
            self.stats.dropped += 1
            return
        queue.append(observation)
        if len(queue) == 1:
            self._wake.set()

    # -- the background evaluation --------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="abuse-detector")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.evaluate_pending()  # (what queued before the stop still counts)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # A pause gathers what else arrives into the same batch: at most 1/batch_delay
            # batches a second, and one script call per distinct observation in each (a busy
            # key seen on every request costs ~10 calls a second, not one per request).
            await asyncio.sleep(self.batch_delay)
            await self.evaluate_pending()

    async def evaluate_pending(self) -> list[Finding]:
        """Evaluate everything queued now; the findings (tests and ``stop`` call it)."""
        queue = self._queue
        if not queue:
            return []
        batch = [queue.popleft() for _ in range(len(queue))]
        try:
            # (A store that stopped answering must not hold the detector forever: the batch is
            # given up and the next one tries again.)
            async with asyncio.timeout(self.evaluate_timeout):
                return await self.evaluate(batch)
        except Exception:  # detection never takes the process down; the next batch tries again
            self.stats.errors += 1
            logger.exception("abuse detection failed on %d observations", len(batch))
            return []

    async def evaluate(self, batch: list[tuple[Any, ...]]) -> list[Finding]:
        """Count ``batch`` and act on what reached a threshold."""
        stats = self.stats
        stats.observed += len(batch)
        stats.batches += 1
        rules = self.rules
        allows = self.allow.allows
        sliding: list[tuple[Rule, str]] = []
        distinct: list[tuple[Rule, str, str]] = []
        seen: set[tuple[str, str, str]] = set()  # (one batch counts a distinct member once)

        def count(pattern: str, subject: str) -> None:
            rule = rules.get(pattern)
            if rule is not None and not allows(subject):
                sliding.append((rule, subject))

        def count_distinct(pattern: str, subject: str, member: str) -> None:
            rule = rules.get(pattern)
            if rule is None or allows(subject) or (pattern, subject, member) in seen:
                return
            seen.add((pattern, subject, member))
            distinct.append((rule, subject, member))

        for observation in batch:
            if observation[0] == _LOGIN:
                _, ip, account = observation
                count("credential_stuffing_ip", f"ip:{ip}")
                count("credential_stuffing_account", f"account:{account}")
                continue
            _, ip, path, status, key_id = observation
            ip_subject = f"ip:{ip}"
            if status == 401 or status == 404:
                count_distinct("scanning", ip_subject, path[:_PATH_BYTES])
            elif status == 429:
                count("retry_after_ignored", f"key:{key_id}" if key_id else ip_subject)
            if key_id is not None:
                key_subject = f"key:{key_id}"
                if allows(key_subject) or allows(ip_subject):
                    continue  # (an allowed key or address never counts towards either)
                count_distinct("keys_per_ip", ip_subject, key_id)
                count_distinct("networks_per_key", key_subject, network_of(ip))
        stats.evaluated += len(sliding) + len(distinct)
        sliding_counts, distinct_counts = await asyncio.gather(
            self.sliding.count(sliding), self.distinct.count(distinct)
        )
        findings: list[Finding] = []
        for (rule, subject), n in zip(sliding, sliding_counts, strict=True):
            if n is not None and n >= rule.threshold:
                findings.append(Finding(rule.pattern, subject, n, rule.threshold, rule.window))
        for (rule, subject, _), n in zip(distinct, distinct_counts, strict=True):
            if n >= rule.threshold:
                findings.append(
                    Finding(rule.pattern, subject, min(n, rule.threshold), rule.threshold,
                            rule.window)
                )  # fmt: skip
        return [f for f in findings if await self._act(f)]

    async def _act(self, finding: Finding) -> bool:
        """List ``finding``; if it is new, or its ban ran out while the subject keeps going:
        report it, and ban when the rule says so (once across replicas: the list decides)."""
        stats = self.stats
        stats.findings += 1
        now = self.clock.now()
        recent = self._recent
        flagged = (finding.pattern, finding.subject)
        if recent.get(flagged, 0.0) > now:
            return False
        if len(recent) >= _RECENT_MAX:
            recent.clear()
        recent[flagged] = now + min(_RECENT_SECONDS, self.flags.ttl)
        rule = self.rules[finding.pattern]
        ban_list = self.bans if rule.ban and finding.kind in ("ip", "key") else None
        listed = await self.flags.add(finding, bans=ban_list is not None)
        if listed == LISTED:
            return False
        if listed == NEW:
            stats.flagged += 1
        stats.by_pattern[finding.pattern] = stats.by_pattern.get(finding.pattern, 0) + 1
        data = finding.as_event()
        banned = 0.0
        if ban_list is not None:
            # (A new flag, or a flagged subject still at it after its ban ran out.)
            banned = await ban_list.offence(finding.subject)
            stats.banned += 1
            await self.flags.note_ban(finding, banned)
        data["banned_for"] = banned
        logger.warning(
            "abuse detected: %s %s (%d in %ss)%s",
            finding.pattern,
            finding.subject,
            finding.count,
            finding.window,
            f", banned for {banned:.0f} s" if banned else "",
        )
        events = self.events()
        if events is not None:
            events.emit("abuse.detected", data, subject=finding.subject)
        return True

    async def clear(self, pattern: str, subject: str) -> bool:
        """Clear one flag (an operator's decision); whether it was listed."""
        self._recent.pop((pattern, subject), None)
        return await self.flags.clear(pattern, subject)

    def snapshot_of(self) -> dict[str, Any]:
        """Configuration and counters, for the admin API."""
        return {
            "patterns": {
                name: {"threshold": r.threshold, "window": r.window, "ban": r.ban}
                for name, r in self.rules.items()
            },
            "queued": len(self._queue),
            "stats": self.stats.as_dict(),
        }
