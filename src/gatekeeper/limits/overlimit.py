"""The over-limit cache: answer a key known to be denied without asking the store.

After the store denies a check of cost ``c`` with ``retry_after = r``, no check of that policy and
key with a cost ``>= c`` can be admitted before ``now + r``: time only refills, and other replicas
can only debit more. So until then the limiter answers such checks locally, as envoyproxy's
ratelimit service does, and a client hammering a denied key costs no Redis round trip at all.

Concurrency limits are never cached: a release can free a slot at any moment. Degraded and shadow
results are never cached either. The cache is bounded; it forgets the oldest entries first.
"""

from __future__ import annotations

from gatekeeper.limits.decision import PolicyResult
from gatekeeper.limits.policy import Algorithm, Check

__all__ = ["OverLimitCache"]

_Key = tuple[str, str]


class OverLimitCache:
    """A bounded map ``(policy name, key) -> (denied until, cost, result)`` on monotonic time."""

    __slots__ = ("_entries", "hits", "max_entries")

    def __init__(self, max_entries: int = 65_536) -> None:
        self.max_entries = max_entries
        self._entries: dict[_Key, tuple[float, float, int, PolicyResult]] = {}
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def lookup(self, check: Check, now: float) -> PolicyResult | None:
        """The denial that still holds for ``check`` at monotonic time ``now``, else ``None``.

        Its ``retry_after`` and ``reset_after`` are counted down to ``now``.
        """
        key = (check.policy.name, check.key)
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, decided_at, cost, result = entry
        if now >= until:
            del self._entries[key]
            return None
        if check.cost < cost:
            return None  # a cheaper hit may fit earlier: ask the store
        self.hits += 1
        elapsed = now - decided_at
        return PolicyResult(
            result.policy,
            False,
            result.limit,
            result.remaining,
            max(result.reset_after - elapsed, until - now),
            until - now,
            False,
        )

    def add(self, check: Check, result: PolicyResult, now: float) -> None:
        """Remember a denial from the store, if it is of a kind that provably lasts."""
        policy = check.policy
        if (
            result.allowed
            or result.shadow
            or result.retry_after <= 0
            or policy.algorithm is Algorithm.CONCURRENCY
        ):
            return
        entries = self._entries
        if len(entries) >= self.max_entries:
            self._evict(now)
        entries[(policy.name, check.key)] = (now + result.retry_after, now, check.cost, result)

    def discard(self, policy_name: str, key: str) -> None:
        """Forget a key (after an admin reset)."""
        self._entries.pop((policy_name, key), None)

    def clear(self) -> None:
        self._entries.clear()

    def _evict(self, now: float) -> None:
        # Drop what has expired; if the map is still full, drop the oldest tenth (dicts keep
        # insertion order), so eviction work is amortized over many inserts.
        entries = self._entries
        for key in [k for k, v in entries.items() if v[0] <= now]:
            del entries[key]
        if len(entries) >= self.max_entries:
            for key in list(entries)[: max(1, self.max_entries // 10)]:
                del entries[key]
