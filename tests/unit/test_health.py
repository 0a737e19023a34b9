"""Active health-check thresholds (the probe itself is tested against real servers)."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.upstream.endpoint import Endpoint
from gatekeeper.gateway.upstream.health import HealthCheckConfig, HealthChecker


def _checker(ep: Endpoint, healthy: int = 2, unhealthy: int = 3) -> HealthChecker:
    config = HealthCheckConfig(healthy_threshold=healthy, unhealthy_threshold=unhealthy)
    return HealthChecker(lambda: [ep], config)


def test_unhealthy_after_threshold_failures() -> None:
    """Only `unhealthy_threshold` consecutive failures take the endpoint out."""
    ep = Endpoint("127.0.0.1", 1)
    checker = _checker(ep)
    checker.record(ep, False, "refused")
    checker.record(ep, False, "refused")
    assert ep.healthy
    checker.record(ep, False, "refused")
    assert not ep.healthy
    assert not ep.available(0.0)
    assert ep.last_check_error == "refused"


def test_pass_in_between_resets_the_failure_streak() -> None:
    """A passing check between failures keeps the endpoint healthy."""
    ep = Endpoint("127.0.0.1", 1)
    checker = _checker(ep)
    for passed in (False, False, True, False, False):
        checker.record(ep, passed)
    assert ep.healthy


def test_healthy_again_after_threshold_passes() -> None:
    """A down endpoint needs `healthy_threshold` consecutive passes to return."""
    ep = Endpoint("127.0.0.1", 1)
    checker = _checker(ep, healthy=2, unhealthy=1)
    checker.record(ep, False)
    checker.record(ep, True)
    assert not ep.healthy
    checker.record(ep, False)
    checker.record(ep, True)
    assert not ep.healthy
    checker.record(ep, True)
    assert ep.healthy


def test_recovery_lifts_an_outlier_ejection() -> None:
    """Passing active checks after being down clears a passive ejection."""
    ep = Endpoint("127.0.0.1", 1)
    checker = _checker(ep, healthy=1, unhealthy=1)
    checker.record(ep, False)
    ep.ejected_until = 1e12
    checker.record(ep, True)
    assert ep.healthy
    assert ep.available(1.0)


@pytest.mark.parametrize(
    "kwargs", [{"path": "health"}, {"interval": 0}, {"timeout": -1}, {"healthy_threshold": 0}]
)
def test_invalid_config_is_refused(kwargs: dict[str, object]) -> None:
    """Bad health-check settings raise ConfigurationError."""
    with pytest.raises(ConfigurationError):
        HealthCheckConfig(**kwargs)  # type: ignore[arg-type]
