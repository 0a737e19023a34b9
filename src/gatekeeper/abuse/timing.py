"""Whose time decides the windows: Redis ``TIME`` in production (every replica agrees whatever
its own clock says), the injected clock when it is not the real one (tests move it)."""

from __future__ import annotations

from gatekeeper.types import Clock, SystemClock

__all__ = ["LUA_NOW", "script_now", "store_now_us"]

# A script's first lines: ``now`` from ARGV[1], or Redis TIME when ARGV[1] is empty.
LUA_NOW = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""


def script_now(clock: Clock) -> str:
    """ARGV[1] for a script starting with :data:`LUA_NOW`."""
    return "" if isinstance(clock, SystemClock) else repr(clock.now())


def store_now_us(clock: Clock) -> int | None:
    """``now_us`` for the limiter: None (the store's clock) unless the clock is injected."""
    return None if isinstance(clock, SystemClock) else round(clock.now() * 1_000_000)
