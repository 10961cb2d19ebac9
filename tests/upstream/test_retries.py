"""The retry budget, 429 cooldowns and Retry-After handling (proxy.upstream.retries)."""

from __future__ import annotations

import math

import pytest

from proxy.config import RetryBudget
from proxy.upstream import retries


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_allows_the_floor_then_the_ratio_of_requests():
    clock = Clock()
    budget = retries.Budget(RetryBudget(ratio=0.2, min_per_second=0.3, window=10.0), clock)  # floor 3
    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]
    for _ in range(10):
        budget.request()
    assert budget.try_retry() and budget.try_retry() and not budget.try_retry()  # 3 + 0.2 × 10 = 5
    assert budget.denied == 2


def test_budget_window_slides_and_free_retries_are_counted_but_never_refused():
    clock = Clock()
    budget = retries.Budget(RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0), clock)  # floor 1
    assert budget.try_retry() and not budget.try_retry()
    assert budget.try_retry(free=True)  # to a provider with a clean record
    clock.now += 5
    assert not budget.try_retry()  # still in the window
    clock.now += 5.01
    assert budget.try_retry()  # the old retries slid out
    clock.now += 1000  # a long quiet time resets every slot
    assert budget.try_retry() and sum(budget.retries) == 1


def test_cooldowns_are_per_provider_and_model_and_expire():
    clock = Clock()
    cooling = retries.Cooldowns(clock)
    cooling.hold(("a", "m"), 2.0)
    cooling.hold(("a", "m"), 1.0)  # a shorter wait never shortens a longer one
    assert cooling.remaining(("a", "m")) == 2.0
    assert cooling.remaining(("a", "other")) == 0.0 and cooling.remaining(("b", "m")) == 0.0
    clock.now += 2.0
    assert cooling.remaining(("a", "m")) == 0.0 and cooling.until == {}


@pytest.mark.parametrize(("value", "expected"), [
    (2.0, 2.0), (0.0, 0.0), (None, None), (-1.0, None), (math.inf, None), (math.nan, None),
    (1e300, retries.MAX_RETRY_AFTER)])
def test_retry_after_values_are_made_safe(value, expected):
    assert retries.retry_after(value) == expected


def test_backoff_doubles_and_never_undercuts_its_step():
    for waits in range(5):
        wait = retries.backoff(waits)
        assert 2 ** waits <= wait <= 1.25 * 2 ** waits
    assert retries.backoff(100) <= 1.25 * 2 ** 16


@pytest.mark.parametrize(("seconds", "header"), [(0, 1), (0.2, 1), (1.0, 1), (1.01, 2), (59.5, 60)])
def test_header_seconds_is_a_whole_number_of_at_least_one(seconds, header):
    assert retries.header_seconds(seconds) == header
