"""Helpers for the limiter's unit tests: a real memory store seen through a recording window."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gatekeeper.errors import StorageError
from gatekeeper.limits.decision import PolicyResult
from gatekeeper.limits.policy import Check
from gatekeeper.limits.storage import storage_from_url
from gatekeeper.testing import FakeClock
from gatekeeper.types import Storage


class RecordingStorage:
    """Wraps the real memory store, hiding its synchronous fast path so that the limiter
    batches as it would with Redis; records every call and can be told to fail or hang."""

    def __init__(self, clock: FakeClock, inner: Storage | None = None) -> None:
        self.inner = inner or storage_from_url("memory://", clock=clock)
        self.calls: list[int] = []  # groups per decide call
        self.releases = 0
        self.fail = False
        self.hang = False
        self.gate: asyncio.Event | None = None

    async def decide(
        self, groups: Sequence[Sequence[Check]], now_us: int | None = None
    ) -> list[list[PolicyResult]]:
        self.calls.append(len(groups))
        if self.gate is not None:
            await self.gate.wait()
        if self.hang:
            await asyncio.Event().wait()  # never answers: the limiter's deadline must cut it
        if self.fail:
            raise StorageError("injected failure")
        return await self.inner.decide(groups, now_us)

    async def release(self, checks: Sequence[Check], lease_id: str) -> None:
        self.releases += 1
        if self.fail:
            raise StorageError("injected failure")
        await self.inner.release(checks, lease_id)

    async def reset(self, checks: Sequence[Check]) -> None:
        await self.inner.reset(checks)

    async def ping(self) -> None:
        await self.inner.ping()

    async def aclose(self) -> None:
        await self.inner.aclose()
