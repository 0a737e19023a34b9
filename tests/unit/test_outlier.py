"""Passive outlier detection: ejection, growing ejection time, the max-percent cap."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.upstream.endpoint import Endpoint
from gatekeeper.gateway.upstream.outlier import OutlierConfig, OutlierDetector
from gatekeeper.testing import FakeClock


def _pool(n: int = 4) -> list[Endpoint]:
    return [Endpoint("10.0.0.1", 9000 + i) for i in range(n)]


def _config(**overrides: float) -> OutlierConfig:
    values = {"consecutive_failures": 3, "consecutive_connect_failures": 2}
    values.update(overrides)
    return OutlierConfig(base_ejection_time=30, max_ejection_time=300, **values)  # type: ignore[arg-type]


def test_consecutive_5xx_eject(fake_clock: FakeClock) -> None:
    """Three 5xx in a row eject the endpoint for base_ejection_time."""
    eps = _pool()
    detector = OutlierDetector(eps, _config())
    now = fake_clock.monotonic()
    assert not detector.record(eps[0], now, 503, True)
    assert not detector.record(eps[0], now, 500, False)
    assert detector.record(eps[0], now, 502, True)
    assert eps[0].ejected(now)
    assert not eps[0].available(now)
    fake_clock.advance(29.9)
    assert eps[0].ejected(fake_clock.monotonic())
    fake_clock.advance(0.1)
    assert eps[0].available(fake_clock.monotonic())


def test_success_resets_the_streak(fake_clock: FakeClock) -> None:
    """A 2xx between 5xx answers restarts the count."""
    eps = _pool()
    detector = OutlierDetector(eps, _config())
    now = fake_clock.monotonic()
    for status in (500, 500, 200, 500, 500):
        detector.record(eps[0], now, status, status >= 500)
    assert not eps[0].ejected(now)


def test_connect_failures_eject_sooner(fake_clock: FakeClock) -> None:
    """Two transport errors in a row (status None) eject before the 5xx threshold."""
    eps = _pool()
    detector = OutlierDetector(eps, _config())
    now = fake_clock.monotonic()
    detector.record(eps[1], now, None, True)
    assert detector.record(eps[1], now, None, True)


def test_ejection_time_grows_with_each_ejection(fake_clock: FakeClock) -> None:
    """The second ejection lasts twice the base time, capped by max_ejection_time."""
    eps = _pool()
    detector = OutlierDetector(eps, _config(consecutive_connect_failures=1))
    detector.record(eps[0], fake_clock.monotonic(), None, True)
    assert eps[0].ejected_until - fake_clock.monotonic() == 30
    fake_clock.advance(30)
    detector.record(eps[0], fake_clock.monotonic(), None, True)
    assert eps[0].ejected_until - fake_clock.monotonic() == 60
    for _ in range(20):
        fake_clock.advance(eps[0].ejected_until - fake_clock.monotonic())
        detector.record(eps[0], fake_clock.monotonic(), None, True)
    assert eps[0].ejected_until - fake_clock.monotonic() == 300


def test_multiplier_decays_after_healthy_service(fake_clock: FakeClock) -> None:
    """Serving well for base_ejection_time after returning brings the multiplier down."""
    eps = _pool()
    detector = OutlierDetector(eps, _config(consecutive_connect_failures=1))
    detector.record(eps[0], fake_clock.monotonic(), None, True)
    fake_clock.advance(30)
    detector.record(eps[0], fake_clock.monotonic(), None, True)
    assert eps[0].ejections == 2
    fake_clock.advance(60 + 30)
    detector.record(eps[0], fake_clock.monotonic(), 200, False)
    assert eps[0].ejections == 1
    detector.record(eps[0], fake_clock.monotonic(), 200, False)
    assert eps[0].ejections == 1  # one step per base_ejection_time, not per request


def test_never_more_than_max_ejection_percent(fake_clock: FakeClock) -> None:
    """With 50% of 4, the third failing endpoint stays in."""
    eps = _pool(4)
    detector = OutlierDetector(eps, _config(consecutive_connect_failures=1))
    now = fake_clock.monotonic()
    assert detector.record(eps[0], now, None, True)
    assert detector.record(eps[1], now, None, True)
    assert not detector.record(eps[2], now, None, True)
    assert detector.ejected_count(now) == 2
    assert detector.refused == 1


def test_disabled_detector_never_ejects(fake_clock: FakeClock) -> None:
    """enabled=False keeps every endpoint in."""
    eps = _pool()
    detector = OutlierDetector(eps, OutlierConfig(enabled=False, consecutive_failures=1))
    assert not detector.record(eps[0], fake_clock.monotonic(), 500, True)


def test_invalid_config_is_refused() -> None:
    """A max ejection percent above 100 is a configuration error."""
    with pytest.raises(ConfigurationError, match="max_ejection_percent"):
        OutlierConfig(max_ejection_percent=150)
