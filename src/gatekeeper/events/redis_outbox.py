"""The shared outbox: a Redis stream, a consumer group per sink, each led by one replica.

Keys (one hash tag, so that every key lives in one slot of a Redis Cluster)::

    <prefix>:{events}:outbox      the stream; field "e" holds the event's envelope
    <prefix>:{events}:lease[:<group>]  who delivers for a group (gatekeeper.lease)
    <prefix>:{events}:dead        dead letters, newest first (bounded list)
    <prefix>:{events}:deliveries  recent delivery records, newest first (bounded list)

Every replica XADDs what it saw. Each sink has a consumer group of its own (``group(name)``)
and a lease of its own (``...:lease:<name>``), so that one sink that is down holds back no
other. A group's leader reads with XREADGROUP as consumer ``owner``; an entry stays in the
group's pending list until the leader XACKs it. The stream is trimmed (XTRIM MINID, at most
once a second per group) below the oldest entry any group has pending or not yet read. A
leader killed between reading and acknowledging leaves its entries pending: the next leader
XAUTOCLAIMs them before reading anything new, so they are delivered again (at least once; the
event id lets consumers drop the duplicate).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import structlog
from redis.exceptions import RedisError, ResponseError

from gatekeeper.errors import StorageError
from gatekeeper.events.model import Event
from gatekeeper.lease import RedisLease

_log = structlog.get_logger("gatekeeper.events")

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["GROUP", "RedisOutbox", "outbox_keys"]

GROUP = "delivery"
# Seconds between two trims of the stream by one group's reader.
TRIM_EVERY = 1.0


def outbox_keys(prefix: str) -> dict[str, str]:
    """The outbox's keys under ``prefix``."""
    base = f"{prefix}:{{events}}:"
    return {name: base + name for name in ("outbox", "lease", "dead", "deliveries")}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RedisOutbox:
    """:class:`gatekeeper.events.outbox.Outbox` on a Redis stream."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "gk",
        max_length: int = 1_000_000,
        keep_deliveries: int = 1000,
        keep_dead: int = 10_000,
        group: str = GROUP,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = outbox_keys(prefix)
        self.stream = self.keys["outbox"]
        self.max_length = max_length
        self.keep_deliveries = keep_deliveries
        self.keep_dead = keep_dead
        self.group_name = group
        lease = self.keys["lease"] if group == GROUP else f"{self.keys['lease']}:{group}"
        self.lease = RedisLease(redis, lease)
        self._group_ready = False
        self._claim_from = "0-0"
        self._trimmed_at = -TRIM_EVERY

    def group(self, name: str) -> RedisOutbox:
        """The same stream read by consumer group ``name``, with a lease of its own."""
        return RedisOutbox(
            self.redis,
            prefix=self.prefix,
            max_length=self.max_length,
            keep_deliveries=self.keep_deliveries,
            keep_dead=self.keep_dead,
            group=name,
        )

    async def prepare(self) -> None:
        """Create this group now (at start-up), so that the stream is not trimmed below what
        it has not read yet."""
        try:
            await self._ensure_group()
        except (RedisError, OSError) as exc:
            raise StorageError(f"events outbox: {exc}") from exc

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the stream's start ("0"): events appended before the first leader ran count.
            await self.redis.xgroup_create(self.stream, self.group_name, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def append(self, events: Sequence[Event]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.xadd(
                        self.stream,
                        {"e": event.to_json()},
                        maxlen=self.max_length,
                        approximate=True,
                    )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StorageError(f"events outbox: {exc}") from exc

    async def lead(self, owner: str, ttl: float) -> bool:
        return await self.lease.acquire(owner, ttl)

    async def resign(self, owner: str) -> None:
        await self.lease.release(owner)

    async def read(self, owner: str, count: int, wait: float) -> list[tuple[str, Event]]:
        try:
            await self._ensure_group()
            # Entries another (dead, or deposed) leader read and never acknowledged come first.
            reply = await self.redis.xautoclaim(
                self.stream,
                self.group_name,
                owner,
                min_idle_time=0,
                start_id=self._claim_from,
                count=count,
            )
            next_start, claimed = cast("tuple[Any, list[Any]]", (reply[0], reply[1]))
            self._claim_from = next_start.decode() if isinstance(next_start, bytes) else next_start
            entries = [(i, f) for i, f in claimed if f]
            if not entries:
                self._claim_from = "0-0"
                streams: list[Any] = await self.redis.xreadgroup(  # type: ignore[assignment]
                    self.group_name,
                    owner,
                    {self.stream: ">"},
                    count=count,
                    block=max(1, int(wait * 1000)),
                )
                entries = [(i, f) for _, batch in streams or [] for i, f in batch if f]
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted under us: recreate the group
                self._group_ready = False
            raise StorageError(f"events outbox: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise StorageError(f"events outbox: {exc}") from exc
        out = []
        poison = []
        for entry_id, fields in entries:
            raw = fields.get(b"e") or fields.get("e")
            key = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            try:
                out.append((key, Event.from_json(raw)))
            except (TypeError, ValueError, KeyError) as exc:
                # Not an event (written by hand, or by another program): it would stop the
                # delivery of everything behind it. Kept aside in the dead letters.
                _log.error("events_outbox_malformed_entry", entry=key, error=str(exc))
                poison.append((key, raw))
        if poison:
            await self.dead_letter(
                [{"entry": k, "raw": str(r)[:2000], "error": "malformed"} for k, r in poison]
            )
            await self.ack([k for k, _ in poison])
        return out

    async def ack(self, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        try:
            await self.redis.xack(self.stream, self.group_name, *entry_ids)
            if time.monotonic() - self._trimmed_at >= TRIM_EVERY:
                self._trimmed_at = time.monotonic()
                await self._trim()
        except (RedisError, OSError) as exc:
            raise StorageError(f"events outbox: {exc}") from exc

    async def _trim(self) -> None:
        """Delete the entries every group is done with: those before the oldest entry any
        group has pending or has not read yet."""
        floor: tuple[int, int] | None = None
        for info in await self.redis.xinfo_groups(self.stream):
            name = _text(info["name"])
            if int(info["pending"]):
                summary = await self.redis.xpending(self.stream, name)
                low = _id(_text(summary["min"]))
            else:
                ms, seq = _id(_text(info["last-delivered-id"]))
                low = (ms, seq + 1)
            floor = low if floor is None else min(floor, low)
        if floor is not None:
            await self.redis.xtrim(self.stream, minid=f"{floor[0]}-{floor[1]}")

    async def _push(self, key: str, records: Sequence[dict[str, Any]], keep: int) -> None:
        if not records:
            return
        values = [json.dumps(r, separators=(",", ":"), default=str) for r in records]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.lpush(key, *values)
                pipe.ltrim(key, 0, keep - 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StorageError(f"events outbox: {exc}") from exc

    async def _range(self, key: str, limit: int) -> list[dict[str, Any]]:
        try:
            raw = await self.redis.lrange(key, 0, limit - 1)
        except (RedisError, OSError) as exc:
            raise StorageError(f"events outbox: {exc}") from exc
        return [json.loads(r) for r in raw]

    async def dead_letter(self, records: Sequence[dict[str, Any]]) -> None:
        await self._push(self.keys["dead"], records, self.keep_dead)

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        return await self._range(self.keys["dead"], limit)

    async def replay(self, limit: int) -> int:
        """Move the ``limit`` oldest dead letters back into the stream. Appended before they
        are trimmed from the list: a crash in between replays them twice (same ids), never
        loses them."""
        key = self.keys["dead"]
        try:
            raw = await self.redis.lrange(key, -limit, -1)
        except (RedisError, OSError) as exc:
            raise StorageError(f"events outbox: {exc}") from exc
        if not raw:
            return 0
        records = [json.loads(r) for r in reversed(raw)]
        # (A malformed entry's record has no event: it is dropped, not replayed.)
        events = [Event.from_json(json.dumps(r["event"])) for r in records if "event" in r]
        if events:
            await self.append(events)
        try:
            await self.redis.ltrim(key, 0, -len(raw) - 1)
        except (RedisError, OSError) as exc:
            raise StorageError(f"events outbox: {exc}") from exc
        return len(events)

    async def record(self, records: Sequence[dict[str, Any]]) -> None:
        await self._push(self.keys["deliveries"], records, self.keep_deliveries)

    async def deliveries(self, limit: int) -> list[dict[str, Any]]:
        return await self._range(self.keys["deliveries"], limit)

    async def backlog(self) -> int:
        try:
            return int(await self.redis.xlen(self.stream))
        except (RedisError, OSError) as exc:
            raise StorageError(f"events outbox: {exc}") from exc

    async def aclose(self) -> None:
        return None
