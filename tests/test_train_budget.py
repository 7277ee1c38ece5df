"""The time budget (train.budget) on a fake clock: the reserve computed once, the same for every use."""

from __future__ import annotations

import pytest
from synthct.train.budget import TimeBudget, final_reserve_s
from train_helpers import FakeClock


def test_the_reserve_holds_the_final_validation_only_when_it_runs() -> None:
    calls: list[int] = []

    def estimate() -> float:
        calls.append(1)
        return 30.0

    assert final_reserve_s(estimate, 2.0, validate_at_end=True) == 32.0
    assert final_reserve_s(estimate, 2.0, validate_at_end=False) == 2.0
    assert calls == [1]  # no validation at the end: its (costly) estimate is not even computed


def test_budget_on_a_fake_clock() -> None:
    clock = FakeClock(start=50.0)
    budget = TimeBudget(seconds=100.0, started=clock(), clock=clock)
    assert budget.enabled and budget.elapsed() == 0.0
    clock.advance(60.0)
    assert not budget.exceeded(upcoming=10.0, reserve=30.0)  # 60 + 10 + 30 = 100: still fits
    assert budget.exceeded(upcoming=10.5, reserve=30.0)
    assert budget.used(reserve=20.0) == pytest.approx(0.75)  # 60 s of the 80 s of training time
    assert budget.steps_left(reserve=20.0, step_s=6.0) == 3  # 20 s left before the reserve
    clock.advance(100.0)
    assert budget.used(reserve=20.0) == 1.0 and budget.steps_left(reserve=20.0, step_s=6.0) == 0


def test_no_budget_never_stops() -> None:
    clock = FakeClock()
    budget = TimeBudget(seconds=0.0, started=clock(), clock=clock)
    clock.advance(1e9)
    assert not budget.enabled and not budget.exceeded(1e9, 1e9)
    assert budget.used(5.0) == 0.0 and budget.steps_left(5.0, 1.0) == 0
