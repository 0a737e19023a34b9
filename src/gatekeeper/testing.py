"""Helpers for testing code that uses Gatekeeper (and for Gatekeeper's own tests)."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that only moves when told to. Satisfies :class:`gatekeeper.types.Clock`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 1_000.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def now_us(self) -> int:
        """The current time in whole microseconds, as storages take it."""
        return round(self._now * 1_000_000)

    def advance(self, seconds: float) -> None:
        """Move time forward (never back)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds
        self._mono += seconds
