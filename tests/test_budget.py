"""The budget decision on hand-made result tables, in-process: the one place that decides pass,
fail or inconclusive, without the command line around it."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from greenbench.check.budget import FAIL, INCONCLUSIVE, PASS, Rule, evaluate
from greenbench.errors import UserError
from greenbench.results.stats import confidence_half_width


def runs(width: float, values: list[float], status: str = "ok") -> list[dict]:
    return [{"run_id": f"{width}-{i}", "status": status, "model": "gan", "width": width,
             "precision": "32-true", "energy_train_j": v} for i, v in enumerate(values)]


def table(*groups: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([row for group in groups for row in group])


def rule(**fields) -> Rule:
    return Rule(name="r", metric="energy_train_j", **fields)


def test_absolute_bounds_compare_the_statistic() -> None:
    frame = table(runs(1.0, [10.0, 12.0, 14.0]))
    (ok,) = evaluate([rule(select={"width": 1.0}, max=12.5)], frame)
    assert ok.result == PASS and ok.value == pytest.approx(12.0) and ok.n == 3
    (broken,) = evaluate([rule(max=11.0)], frame)
    assert broken.result == FAIL and broken.margin == pytest.approx((11 - 12) / 11)
    (upper,) = evaluate([rule(max=12.5, statistic="upper_ci")], frame)
    assert upper.value == pytest.approx(12.0 + confidence_half_width(2.0, 3))
    assert upper.result == FAIL
    (tolerated,) = evaluate([rule(max=11.0, tolerance=0.1)], frame)
    assert tolerated.bound == pytest.approx(12.1) and tolerated.result == PASS


def test_a_significant_ratio_breach_fails_and_noise_is_inconclusive() -> None:
    reference = runs(1.0, [100.0, 101.0, 99.0, 100.5])
    far = runs(0.5, [95.0, 96.0, 94.0, 95.5])  # 0.95x: far beyond 0.8 with tiny spread
    (verdict,) = evaluate([rule(select={"width": 0.5}, relative_to={"width": 1.0},
                                max_ratio=0.8)], table(reference, far))
    assert verdict.result == FAIL and verdict.p_value < 0.01
    assert verdict.value == pytest.approx(95.125 / 100.125)
    noisy = runs(0.5, [40.0, 120.0, 60.0, 110.0])  # mean 82.5: beyond 0.8, within noise
    (verdict,) = evaluate([rule(select={"width": 0.5}, relative_to={"width": 1.0},
                                max_ratio=0.8)], table(reference, noisy))
    assert verdict.result == INCONCLUSIVE and verdict.p_value >= 0.01


def test_one_run_a_side_leaves_the_bound_to_decide() -> None:
    frame = table(runs(1.0, [100.0]), runs(0.5, [90.0]))
    (verdict,) = evaluate([rule(select={"width": 0.5}, relative_to={"width": 1.0},
                                max_ratio=0.8)], frame)
    assert verdict.result == FAIL and verdict.p_value is None
    assert "the bound alone decides" in verdict.note


def test_runs_that_are_not_ok_are_never_counted() -> None:
    frame = table(runs(1.0, [10.0]), runs(1.0, [1000.0], status="failed"))
    (verdict,) = evaluate([rule(max=11.0)], frame)
    assert verdict.result == PASS and verdict.n == 1


def test_a_selection_without_ok_runs_is_bad_input() -> None:
    with pytest.raises(UserError, match="matches no ok run"):
        evaluate([rule(select={"width": 2.0}, max=1.0)], table(runs(1.0, [1.0])))


def test_margin_of_a_zero_bound_is_undefined() -> None:
    (verdict,) = evaluate([rule(min=0.0)], table(runs(1.0, [1.0])))
    assert verdict.result == PASS and math.isnan(verdict.margin)
