"""Consistent hashing: a ring with virtual nodes, and Maglev.

Both map a request key (client IP, a header, a cookie) to an endpoint so that the same key keeps
landing on the same endpoint, and both are *stable*: when an endpoint becomes unavailable
(unhealthy, ejected, open breaker) only the keys it owned move; every other key stays put.

* :class:`HashRing` (Karger et al., Ketama): ``vnodes x weight`` points per endpoint on a 64-bit
  circle; a key belongs to the first point clockwise of its hash (binary search, O(log n)). An
  unavailable owner hands its keys to the next available point clockwise.
* :class:`MaglevTable` (Eisenbud et al., NSDI 2016): a lookup table of prime size ``M`` filled
  from per-endpoint permutations, weighted by turns per round; lookup is one index (O(1)). An
  unavailable owner's keys are rehashed with a new seed until they hit an available entry, which
  spreads them evenly over the survivors without touching anyone else's keys.

Hashes are BLAKE2b, not Python's ``hash()``: every replica must agree on the mapping.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from gatekeeper.errors import ConfigurationError

if TYPE_CHECKING:
    from gatekeeper.gateway.upstream.context import BalanceContext
    from gatekeeper.gateway.upstream.endpoint import Endpoint

__all__ = [
    "ConsistentHashBalancer",
    "HashRing",
    "MaglevTable",
    "hash64",
    "parse_hash_on",
    "request_key",
]

_MASK = (1 << 64) - 1
# Maglev table sizes: primes, the first >= 100 x endpoints is used (<= ~1% imbalance).
_PRIMES = (211, 503, 1009, 2003, 4001, 8009, 16001, 32003, 65537)
# How many rehashes a key tries before the balancer scans for any available endpoint.
_REHASHES = 16
_MAX_POINTS = 20_000  # bounds build time (a switch at run time blocks the loop briefly)


def hash64(data: str | bytes) -> int:
    """A stable 64-bit hash of ``data``."""
    raw = data.encode() if isinstance(data, str) else data
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def _mix(value: int) -> int:
    """SplitMix64's finaliser: a cheap rehash of a 64-bit value."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


class HashRing:
    """A hash ring over named members with ``vnodes x weight`` points each."""

    __slots__ = ("_owners", "_points", "size")

    def __init__(self, names: Sequence[str], weights: Sequence[int], vnodes: int = 256) -> None:
        # 256 points per unit of weight keep each share within ~7 points of even for three
        # endpoints whatever their addresses (100 left one at 41% in about 3% of layouts).
        # Large weights would make the ring huge: scale them down to at most ~_MAX_POINTS.
        scale = min(1.0, _MAX_POINTS / max(1, vnodes * sum(weights)))
        pairs = sorted(
            (hash64(f"{name}#{i}"), index)
            for index, (name, weight) in enumerate(zip(names, weights, strict=True))
            for i in range(max(1, round(vnodes * weight * scale)))
        )
        self._points = [point for point, _ in pairs]
        self._owners = [index for _, index in pairs]
        self.size = len(names)

    def lookup(self, key_hash: int) -> int:
        """The index of the member owning ``key_hash``."""
        i = bisect.bisect(self._points, key_hash)
        return self._owners[i if i < len(self._owners) else 0]

    def walk(self, key_hash: int) -> list[int]:
        """Member indices in clockwise order from ``key_hash``, each once (for failover)."""
        start = bisect.bisect(self._points, key_hash)
        owners = self._owners
        count = len(owners)
        seen: list[int] = []
        for k in range(count):
            owner = owners[(start + k) % count]
            if owner not in seen:
                seen.append(owner)
                if len(seen) == self.size:
                    break
        return seen


class MaglevTable:
    """A Maglev lookup table over named members, weighted by turns per round."""

    __slots__ = ("size", "table")

    def __init__(
        self, names: Sequence[str], weights: Sequence[int], size: int | None = None
    ) -> None:
        if not names:
            raise ConfigurationError("a Maglev table needs at least one member")
        wanted = max(100 * len(names), 20 * sum(weights))
        m = size or next((p for p in _PRIMES if p >= wanted), _PRIMES[-1])
        offsets = []
        skips = []
        for name in names:
            h = hash64(name)
            offsets.append(h % m)
            skips.append(_mix(h) % (m - 1) + 1)
        table = [-1] * m
        nexts = [0] * len(names)
        filled = 0
        # Each round, member i takes ``weight`` turns; a turn claims its next preferred slot
        # that is still free (its permutation is offset + j * skip mod M).
        while filled < m:
            for i, weight in enumerate(weights):
                for _ in range(weight):
                    slot = (offsets[i] + nexts[i] * skips[i]) % m
                    while table[slot] >= 0:
                        nexts[i] += 1
                        slot = (offsets[i] + nexts[i] * skips[i]) % m
                    table[slot] = i
                    nexts[i] += 1
                    filled += 1
                    if filled == m:
                        break
                if filled == m:
                    break
        self.table = table
        self.size = m

    def lookup(self, key_hash: int) -> int:
        """The index of the member owning ``key_hash``."""
        return self.table[key_hash % self.size]


def parse_hash_on(spec: str | None) -> tuple[str, str]:
    """``"ip"``, ``"header:<name>"`` or ``"cookie:<name>"`` -> (kind, name)."""
    if spec is None or spec == "ip":
        return ("ip", "")
    kind, _, name = spec.partition(":")
    if kind in ("header", "cookie") and name:
        return (kind, name.lower() if kind == "header" else name)
    raise ConfigurationError(f"hash_on {spec!r}: use 'ip', 'header:<name>' or 'cookie:<name>'")


def request_key(ctx: BalanceContext, kind: str, name: str) -> str:
    """The value a request is hashed on; falls back to the client IP when it is missing."""
    if kind == "header":
        wanted = name.encode()
        for header, value in ctx.headers:
            if header == wanted:
                return value.decode("latin-1")
    elif kind == "cookie":
        for header, value in ctx.headers:
            if header == b"cookie":
                for part in value.decode("latin-1").split(";"):
                    key, sep, val = part.strip().partition("=")
                    if sep and key == name:
                        return val
    return ctx.client_ip


class ConsistentHashBalancer:
    """Hash-based choice over a ring (``"ring_hash"``) or a Maglev table (``"maglev"``)."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        kind: str = "ring_hash",
        hash_on: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if kind not in ("ring_hash", "maglev"):
            raise ConfigurationError(f"unknown consistent hash {kind!r}")
        self.name = kind
        self.hash_on = hash_on or "ip"
        self._kind, self._key = parse_hash_on(hash_on)
        self._endpoints = list(endpoints)
        self._rng = rng or random.Random()
        names = [e.address for e in self._endpoints]
        weights = [e.weight for e in self._endpoints]
        self._ring = HashRing(names, weights) if kind == "ring_hash" else None
        self._maglev = MaglevTable(names, weights) if kind == "maglev" else None

    def key_hash(self, ctx: BalanceContext) -> int:
        """The 64-bit hash of the request's key."""
        key = request_key(ctx, self._kind, self._key)
        return hash64(key) if key else self._rng.getrandbits(64)

    def pick(
        self, ctx: BalanceContext, now: float, exclude: Collection[Endpoint]
    ) -> Endpoint | None:
        """The key's owner, or the stable fallback when the owner is unavailable."""
        endpoints = self._endpoints
        h = self.key_hash(ctx)
        if self._ring is not None:
            ep = endpoints[self._ring.lookup(h)]
            if ep.available(now) and ep not in exclude:
                return ep
            for index in self._ring.walk(h):
                ep = endpoints[index]
                if ep.available(now) and ep not in exclude:
                    return ep
            return None
        assert self._maglev is not None
        for _ in range(_REHASHES):
            ep = endpoints[self._maglev.lookup(h)]
            if ep.available(now) and ep not in exclude:
                return ep
            h = _mix(h)
        # Almost everything is down: any available endpoint, in a stable order.
        count = len(endpoints)
        for k in range(count):
            ep = endpoints[(h + k) % count]
            if ep.available(now) and ep not in exclude:
                return ep
        return None
