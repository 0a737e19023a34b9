"""Live per-second statistics for the dashboards, aggregated across replicas.

Each process records into a small in-memory bucket per wall-clock second (cheap: dict
increments on the request path). Every half second :meth:`LiveStats.flush` adds the pending
increments to the shared :class:`~gatekeeper.observability.live_store.LiveStore`: with Redis,
one pipeline of ``HINCRBY`` on a per-second hash shared by all replicas (additive, so the sum is
exact whatever the flush timing); embedded, a dict in the process. :meth:`LiveStats.snapshot`
reads the last minute back and derives rates, latency percentiles, top limited keys and the
waiting rooms' ETA, so that with four gateway processes the dashboard shows the cluster.

Field names in a bucket (all integer counts):

``req`` requests; ``lim`` rate limited; ``s2``..``s5`` status classes; ``t:<code>`` termination
codes; ``up:<pool>`` requests per upstream; ``lat:<i>`` latency histogram (bucket ``i`` spans up
to ``100 us * 1.25**i``); ``lat_us`` summed latency; ``cache:<result>``; ``pol:<policy>:<outcome>``;
``deg:<mode>``; ``wr_adm:<tenant>``, ``wr_abn:<tenant>``, ``wr_tok:<tenant>``. Gauges (queue
depths, waiting-room lengths) are kept per replica and summed or maxed on read.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from gatekeeper.observability.access import Termination
from gatekeeper.observability.live_store import Bucket, LiveStore, MemoryLiveStore

if TYPE_CHECKING:
    from gatekeeper.observability.access import AccessEntry
    from gatekeeper.types import Clock

__all__ = ["LATENCY_BASE_US", "LATENCY_GROWTH", "LiveStats", "latency_bucket", "percentile"]

LATENCY_BASE_US = 100.0
LATENCY_GROWTH = 1.25
_LAST_BUCKET = 60  # 100 us * 1.25**60 is about 11 minutes: everything fits
_LOG_GROWTH = math.log(LATENCY_GROWTH)
# How many limited keys/IPs per second one replica sends: an attack with a million keys must not
# turn the dashboard into a million-member sorted set; the top of the list is what matters.
_TOP_PER_FLUSH = 20
_LINES_PER_FLUSH = 20
_RATE_WINDOW = 5  # seconds averaged for the "per second" figures
# Gauge fields summed across replicas (per-replica quantities); the others take the maximum
# (a shared quantity that every replica reports, such as a waiting room's length in Redis).
_SUMMED_GAUGES = ("queue:",)
_STATUS_FIELDS = {1: "s1", 2: "s2", 3: "s3", 4: "s4", 5: "s5"}
_LAT_FIELDS = tuple(f"lat:{i}" for i in range(_LAST_BUCKET + 1))
_TERM_FIELDS = {term.code: "t:" + term.code for term in Termination}


def latency_bucket(seconds: float) -> int:
    """The histogram bucket of a latency (mergeable across replicas by summing counts)."""
    micros = seconds * 1_000_000
    if micros <= LATENCY_BASE_US:
        return 0
    return min(_LAST_BUCKET, math.ceil(math.log(micros / LATENCY_BASE_US) / _LOG_GROWTH))


def _bucket_upper_ms(index: int) -> float:
    return LATENCY_BASE_US * LATENCY_GROWTH**index / 1000


def percentile(histogram: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) in milliseconds, as the upper bound of its bucket (<= 25% high)."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return round(_bucket_upper_ms(index), 3)
    return round(_bucket_upper_ms(max(histogram)), 3)  # pragma: no cover - rank <= total


def _line(at: float, entry: AccessEntry, term: str) -> dict[str, Any]:
    return {
        "t": round(at, 3),
        "id": entry.request_id,
        "method": entry.method,
        "path": entry.path.split("?", 1)[0][:200],
        "status": entry.status,
        "ms": round(entry.duration * 1000, 2),
        "term": term,
        "route": entry.route,
        "upstream": entry.endpoint or entry.upstream,
        "policy": entry.policy,
        "ip": entry.client_ip,
    }


def _new_bucket() -> Bucket:
    return Bucket(Counter(), Counter(), Counter())


class LiveStats:
    """Per-second counters of this replica, flushed to a shared store and read back merged.

    ``request``, ``count`` and ``gauge`` are what :class:`~gatekeeper.observability.metrics.Metrics`
    forwards when its ``live`` attribute is set; ``record`` is an
    :class:`~gatekeeper.observability.logging.AccessLog` sink (lines, terminations, top limited).
    """

    def __init__(
        self,
        clock: Clock,
        store: LiveStore | None = None,
        *,
        replica: str | None = None,
        history: int = 60,
    ) -> None:
        self.clock = clock
        self.store = store if store is not None else MemoryLiveStore()
        self.replica = replica or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.history = history
        self._pending: dict[int, Bucket] = {}
        self._lines: deque[tuple[float, AccessEntry, str]] = deque(maxlen=_LINES_PER_FLUSH)
        self._gauges: dict[str, float] = {}
        self._gauges_dirty = False
        self.recorded = 0
        self._now = clock.now
        self._raw: dict[tuple[int, int, str | None, int], int] = {}
        self._micros: dict[int, int] = {}

    def _bucket(self) -> Bucket:
        second = int(self.clock.now())
        bucket = self._pending.get(second)
        if bucket is None:
            bucket = self._pending[second] = _new_bucket()
        return bucket

    # -- recording (synchronous, cheap) ---------------------------------------------------------

    def request(self, status: int, upstream: str | None, seconds: float) -> None:
        """Count one answered request (``Metrics.request`` forwards here): rates, statuses,
        latency. A 429 counts as limited."""
        # Hot path: one tuple key in a plain dict; expanded into bucket fields at flush time.
        key = (int(self._now()), status, upstream, latency_bucket(seconds))
        raw = self._raw
        raw[key] = raw.get(key, 0) + 1
        micros = self._micros
        micros[key[0]] = micros.get(key[0], 0) + int(seconds * 1_000_000)

    def _expand(self) -> None:
        """Fold the hot path's raw counts into the per-second buckets."""
        raw, micros = self._raw, self._micros
        if not raw and not micros:
            return
        self._raw, self._micros = {}, {}
        pending = self._pending
        for (second, status, upstream, lat), n in raw.items():
            bucket = pending.get(second)
            if bucket is None:
                bucket = pending[second] = _new_bucket()
            counts = bucket.counts
            counts["req"] += n
            counts[_STATUS_FIELDS.get(status // 100, "s0")] += n
            if status == 429:
                counts["lim"] += n
            elif upstream:
                counts["up:" + upstream] += n
            counts[_LAT_FIELDS[lat]] += n
            self.recorded += n
        for second, total in micros.items():
            bucket = pending.get(second)
            if bucket is None:
                bucket = pending[second] = _new_bucket()
            bucket.counts["lat_us"] += total

    def record(self, entry: AccessEntry) -> None:
        """Account the access line of one request (the access log's sink): why it ended, who
        was limited, and the line itself for the "recent requests" table."""
        # Hot path: one clock read for the bucket and the line.
        now = self._now()
        second = int(now)
        bucket = self._pending.get(second)
        if bucket is None:
            bucket = self._pending[second] = _new_bucket()
        term = entry.resolved_termination()
        code = term.code
        bucket.counts[_TERM_FIELDS.get(code) or "t:" + code] += 1
        if term is Termination.LIMITED:
            bucket.limited_keys[entry.limit_key or "ip:" + entry.client_ip] += 1
            bucket.limited_ips[entry.client_ip] += 1
        # Only the newest lines are shown: keep the entries, turn them into dicts at flush time.
        self._lines.append((now, entry, code))

    def count(self, field: str, n: int = 1) -> None:
        """Add ``n`` to a named per-second counter (see the module docstring for names)."""
        self._bucket().counts[field] += n

    def gauge(self, field: str, value: float) -> None:
        """Set this replica's value of a gauge (``queue:<pool>``, ``wr_len:<tenant>``, ...)."""
        self._gauges[field] = value
        self._gauges_dirty = True

    # -- sharing ------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Add the pending increments to the shared store (raises StorageError on failure;
        the increments are then kept and sent with the next flush)."""
        self._expand()
        pending, lines = self._pending, [_line(*item) for item in self._lines]
        if not pending and not lines and not self._gauges_dirty:
            await self.store.heartbeat(self.replica, self.clock.now(), None)
            return
        for bucket in pending.values():
            bucket.trim(_TOP_PER_FLUSH)
        self._pending = {}
        self._lines.clear()
        gauges = dict(self._gauges) if self._gauges_dirty else None
        try:
            await self.store.add(pending, lines, ttl=self.history * 2)
            await self.store.heartbeat(self.replica, self.clock.now(), gauges)
        except BaseException:  # an error, or the caller's timeout cancelling the flush
            # Put the increments back so that a store hiccup loses nothing.
            for second, bucket in pending.items():
                self._pending.setdefault(second, _new_bucket()).merge(bucket)
            raise
        self._gauges_dirty = False

    # -- reading ------------------------------------------------------------------------------

    async def snapshot(self, seconds: int | None = None) -> dict[str, Any]:
        """The merged view of the last ``seconds`` (default: the whole history) for dashboards."""
        span = seconds or self.history
        now = int(self.clock.now())
        # The current second is still filling: rates use the complete seconds before it.
        wanted = list(range(now - span, now + 1))
        buckets = await self.store.read(wanted)
        replicas, gauges = await self.store.replicas(self.clock.now(), _SUMMED_GAUGES)
        lines = await self.store.lines(50)
        return _summarise(now, wanted, buckets, replicas, gauges, lines)


def _summarise(
    now: int,
    seconds: list[int],
    buckets: dict[int, Bucket],
    replicas: int,
    gauges: dict[str, float],
    lines: list[dict[str, Any]],
) -> dict[str, Any]:
    total = _new_bucket()
    for bucket in buckets.values():
        total.merge(bucket)
    recent = _new_bucket()
    rate_seconds = [s for s in seconds if now - _RATE_WINDOW <= s < now]
    for second in rate_seconds:
        if second in buckets:
            recent.merge(buckets[second])
    per = 1 / max(1, len(rate_seconds))

    def rate(bucket: Bucket, field: str) -> float:
        return round(bucket.counts.get(field, 0) * per, 2)

    def histogram(bucket: Bucket) -> dict[int, int]:
        return {int(k[4:]): v for k, v in bucket.counts.items() if k.startswith("lat:")}

    def group(bucket: Bucket, prefix: str) -> dict[str, int]:
        n = len(prefix)
        return {k[n:]: v for k, v in bucket.counts.items() if k.startswith(prefix) and v}

    recent_hist = histogram(recent)
    req = recent.counts.get("req", 0)
    cache = group(total, "cache:")
    lookups = sum(cache.values())
    series = []
    for second in seconds[:-1]:
        b = buckets.get(second)
        c = b.counts if b else {}
        hist = histogram(b) if b else {}
        series.append(
            {
                "t": second,
                "req": c.get("req", 0),
                "lim": c.get("lim", 0),
                "err": c.get("s5", 0),
                "p50": percentile(hist, 0.5),
                "p95": percentile(hist, 0.95),
            }
        )
    policies: dict[str, dict[str, int]] = {}
    for key, value in group(total, "pol:").items():
        policy, _, outcome = key.rpartition(":")
        policies.setdefault(policy, {})[outcome] = value
    return {
        "ts": now,
        "replicas": replicas,
        "window_seconds": len(seconds) - 1,
        "traffic": {
            "rps": rate(recent, "req"),
            "allowed_rps": round((req - recent.counts.get("lim", 0)) * per, 2),
            "limited_rps": rate(recent, "lim"),
            "error_rps": rate(recent, "s5"),
            "p50_ms": percentile(recent_hist, 0.5),
            "p95_ms": percentile(recent_hist, 0.95),
            "p99_ms": percentile(recent_hist, 0.99),
            "mean_ms": round(recent.counts.get("lat_us", 0) / req / 1000, 3) if req else None,
        },
        "totals": {
            "requests": total.counts.get("req", 0),
            "limited": total.counts.get("lim", 0),
            "errors": total.counts.get("s5", 0),
            "status": {f"{k[1:]}xx": v for k, v in total.counts.items() if k[:1] == "s" and v},
            "terminations": group(total, "t:"),
            "upstreams": group(total, "up:"),
            "degraded": group(total, "deg:"),
        },
        "series": series,
        "cache": {
            **cache,
            "hit_ratio": round((cache.get("hit", 0) + cache.get("stale", 0)) / lookups, 3)
            if lookups
            else None,
        },
        "queues": {k[6:]: v for k, v in gauges.items() if k.startswith("queue:")},
        "policies": policies,
        "top_limited_keys": total.limited_keys.most_common(10),
        "top_limited_ips": total.limited_ips.most_common(10),
        "waiting_rooms": _waiting_rooms(total, gauges, len(seconds) - 1),
        "recent": lines,
    }


def _waiting_rooms(
    total: Bucket, gauges: dict[str, float], window: int
) -> dict[str, dict[str, Any]]:
    tenants: set[str] = {k[7:] for k in gauges if k.startswith("wr_len:")}
    tenants |= {k.split(":", 1)[1] for k in total.counts if k.startswith(("wr_adm:", "wr_abn:"))}
    out: dict[str, dict[str, Any]] = {}
    for tenant in sorted(tenants):
        length = int(gauges.get(f"wr_len:{tenant}", 0))
        admitted = total.counts.get(f"wr_adm:{tenant}", 0)
        abandoned = total.counts.get(f"wr_abn:{tenant}", 0)
        rate = admitted / window if window else 0.0
        out[tenant] = {
            "queue_length": length,
            "admitted": admitted,
            "admission_rate": round(rate, 3),
            "eta_seconds": round(length / rate, 1) if rate > 0 else None,
            "abandoned": abandoned,
            "abandon_ratio": round(abandoned / (admitted + abandoned), 3)
            if admitted + abandoned
            else None,
            "tokens_issued": total.counts.get(f"wr_tok:{tenant}", 0),
        }
    return out
