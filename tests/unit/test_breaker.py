"""Circuit breaker transitions, driven by a fake clock."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.upstream.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    RollingWindow,
)
from gatekeeper.testing import FakeClock


def _fail(breaker: CircuitBreaker, clock: FakeClock, times: int) -> None:
    for _ in range(times):
        now = clock.monotonic()
        assert breaker.allows(now)
        breaker.on_start(now)
        breaker.record(now, ok=False)


def test_trips_after_consecutive_failures(fake_clock: FakeClock) -> None:
    """N consecutive failures open the breaker; N-1 do not."""
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=3, min_requests=100))
    _fail(breaker, fake_clock, 2)
    assert breaker.state is BreakerState.CLOSED
    _fail(breaker, fake_clock, 1)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allows(fake_clock.monotonic())


def test_success_resets_the_consecutive_count(fake_clock: FakeClock) -> None:
    """A success between failures restarts the consecutive count."""
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=3, min_requests=100))
    _fail(breaker, fake_clock, 2)
    breaker.record(fake_clock.monotonic(), ok=True)
    _fail(breaker, fake_clock, 2)
    assert breaker.state is BreakerState.CLOSED


def test_trips_on_error_ratio_once_min_requests_reached(fake_clock: FakeClock) -> None:
    """Alternating failures trip on the ratio, but only after min_requests in the window."""
    config = BreakerConfig(consecutive_failures=100, error_ratio=0.5, min_requests=10)
    breaker = CircuitBreaker(config)
    now = fake_clock.monotonic()
    for i in range(9):
        breaker.record(now, ok=i % 2 == 1)  # 5 failures out of 9
    assert breaker.state is BreakerState.CLOSED
    breaker.record(now, ok=False)  # 6 of 10
    assert breaker.state is BreakerState.OPEN


def test_ratio_window_forgets_old_failures(fake_clock: FakeClock) -> None:
    """Failures older than the window no longer count toward the ratio."""
    config = BreakerConfig(consecutive_failures=100, error_ratio=0.5, min_requests=4, window=10)
    breaker = CircuitBreaker(config)
    for _ in range(3):
        breaker.record(fake_clock.monotonic(), ok=False)
    fake_clock.advance(11)
    breaker.record(fake_clock.monotonic(), ok=True)
    breaker.record(fake_clock.monotonic(), ok=True)
    breaker.record(fake_clock.monotonic(), ok=True)
    breaker.record(fake_clock.monotonic(), ok=False)  # 1 of 4 in the window
    assert breaker.state is BreakerState.CLOSED


def test_open_turns_half_open_after_open_for(fake_clock: FakeClock) -> None:
    """The breaker stays open for open_for seconds, then lets a probe through."""
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, open_for=30))
    _fail(breaker, fake_clock, 1)
    fake_clock.advance(29.9)
    assert not breaker.allows(fake_clock.monotonic())
    fake_clock.advance(0.1)
    assert breaker.allows(fake_clock.monotonic())
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_limits_probes_in_flight(fake_clock: FakeClock) -> None:
    """Half-open admits only half_open_probes requests at a time."""
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, open_for=1, half_open_probes=2))
    _fail(breaker, fake_clock, 1)
    fake_clock.advance(1)
    now = fake_clock.monotonic()
    for _ in range(2):
        assert breaker.allows(now)
        breaker.on_start(now)
    assert not breaker.allows(now)


def test_half_open_success_closes(fake_clock: FakeClock) -> None:
    """Enough successful probes close the breaker with a clean slate."""
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, open_for=1, success_threshold=2))
    _fail(breaker, fake_clock, 1)
    fake_clock.advance(1)
    now = fake_clock.monotonic()
    for expected in (BreakerState.HALF_OPEN, BreakerState.CLOSED):
        assert breaker.allows(now)
        breaker.on_start(now)
        breaker.record(now, ok=True)
        assert breaker.state is expected
    assert breaker.snapshot(now)["window_requests"] == 0


def test_half_open_failure_reopens(fake_clock: FakeClock) -> None:
    """A failed probe opens the breaker again for a full open_for."""
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, open_for=5))
    _fail(breaker, fake_clock, 1)
    fake_clock.advance(5)
    _fail(breaker, fake_clock, 1)
    assert breaker.state is BreakerState.OPEN
    assert breaker.trips == 2
    fake_clock.advance(4)
    assert not breaker.allows(fake_clock.monotonic())


def test_disabled_breaker_never_trips(fake_clock: FakeClock) -> None:
    """enabled=False counts but never opens."""
    breaker = CircuitBreaker(BreakerConfig(enabled=False, consecutive_failures=1))
    _fail(breaker, fake_clock, 50)
    assert breaker.state is BreakerState.CLOSED


def test_rolling_window_sums_only_recent_buckets() -> None:
    """The window sums the last `window` seconds only."""
    window = RollingWindow(10.0, buckets=10)
    window.add(0.5, 1, 2)
    window.add(5.5, 3, 4)
    assert window.totals(9.9) == (4, 6)
    assert window.totals(10.5) == (3, 4)
    assert window.totals(16.0) == (0, 0)


@pytest.mark.parametrize(
    "kwargs",
    [{"consecutive_failures": 0}, {"error_ratio": 0.0}, {"open_for": 0}, {"half_open_probes": 0}],
)
def test_invalid_config_is_refused(kwargs: dict[str, float]) -> None:
    """Nonsensical breaker settings raise ConfigurationError."""
    with pytest.raises(ConfigurationError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]


def test_lost_probe_does_not_keep_the_endpoint_out(fake_clock: FakeClock) -> None:
    """A half-open probe whose outcome never arrives frees its slot after open_for."""
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, open_for=10))
    _fail(breaker, fake_clock, 1)
    fake_clock.advance(10)
    now = fake_clock.monotonic()
    assert breaker.allows(now)
    breaker.on_start(now)  # ... and never recorded
    fake_clock.advance(9.9)
    assert not breaker.allows(fake_clock.monotonic())
    fake_clock.advance(0.1)
    assert breaker.allows(fake_clock.monotonic())


def test_released_probe_frees_the_slot_without_judging(fake_clock: FakeClock) -> None:
    """release_probe (a cancelled request) frees the probe slot and leaves the state alone."""
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, open_for=10))
    _fail(breaker, fake_clock, 1)
    fake_clock.advance(10)
    now = fake_clock.monotonic()
    assert breaker.allows(now)
    breaker.on_start(now)
    assert not breaker.allows(now)
    breaker.release_probe()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allows(now)


def test_transitions_are_reported(fake_clock: FakeClock) -> None:
    """on_change hears open, half_open and closed, once each."""
    seen: list[BreakerState] = []
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, open_for=1), seen.append)
    _fail(breaker, fake_clock, 1)
    fake_clock.advance(1)
    now = fake_clock.monotonic()
    breaker.allows(now)
    breaker.allows(now)
    breaker.on_start(now)
    breaker.record(now, ok=True)
    assert seen == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
