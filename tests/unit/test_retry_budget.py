"""The retry budget: at most ratio x requests (+ a floor) retries per window."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.upstream.retry import RetryBudget, RetryBudgetConfig, is_idempotent
from gatekeeper.testing import FakeClock


def test_ratio_caps_retries(fake_clock: FakeClock) -> None:
    """With no floor, 100 requests allow exactly 20 retries at ratio 0.2."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_per_second=0), fake_clock)
    for _ in range(100):
        budget.deposit()
    allowed = sum(budget.allow_retry() for _ in range(50))
    assert allowed == 20
    assert budget.denied == 30


def test_floor_allows_retries_on_a_quiet_pool(fake_clock: FakeClock) -> None:
    """min_per_second x window retries are allowed even without traffic."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_per_second=0.5, window=10), fake_clock)
    assert sum(budget.allow_retry() for _ in range(10)) == 5


def test_budget_refills_as_the_window_moves(fake_clock: FakeClock) -> None:
    """Retries spent leave the window after `window` seconds."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.5, min_per_second=0, window=10), fake_clock)
    for _ in range(10):
        budget.deposit()
    assert sum(budget.allow_retry() for _ in range(10)) == 5
    fake_clock.advance(11)
    assert not budget.allow_retry()  # the requests left the window too
    for _ in range(4):
        budget.deposit()
    assert sum(budget.allow_retry() for _ in range(10)) == 2


def test_snapshot_reports_window(fake_clock: FakeClock) -> None:
    """The snapshot shows requests, retries and what is still available."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_per_second=0), fake_clock)
    for _ in range(10):
        budget.deposit()
    assert budget.allow_retry()
    snap = budget.snapshot()
    assert snap["window_requests"] == 10
    assert snap["window_retries"] == 1
    assert snap["available"] == 1


def test_idempotent_methods() -> None:
    """GET/PUT/DELETE... are retryable, POST and PATCH are not."""
    assert is_idempotent("get")
    assert is_idempotent("PUT")
    assert is_idempotent("DELETE")
    assert not is_idempotent("POST")
    assert not is_idempotent("PATCH")


def test_invalid_ratio_is_refused() -> None:
    """A ratio above 1 is a configuration error."""
    with pytest.raises(ConfigurationError, match="ratio"):
        RetryBudgetConfig(ratio=1.5)
