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


def precision_runs(precision: str, width: float, values: list[float],
                   model: str = "gan") -> list[dict]:
    return [{**row, "run_id": f"{model}-{precision}-{row['run_id']}", "precision": precision,
             "model": model} for row in runs(width, values)]


def test_each_configuration_a_rule_selects_gets_its_own_verdict() -> None:
    frame = table(precision_runs("32-true", 1.0, [100.0, 101.0, 99.0]),
                  precision_runs("32-true", 0.5, [50.0, 51.0, 49.0]),
                  precision_runs("bf16-mixed", 1.0, [10.0, 10.1, 9.9]),
                  precision_runs("bf16-mixed", 0.5, [68.0, 68.5, 67.5]))
    fp32, bf16 = evaluate([rule(select={"width": 0.5}, relative_to={"width": 1.0},
                                max_ratio=0.8)], frame)
    assert (fp32.configuration, bf16.configuration) == (
        {"precision": "32-true"}, {"precision": "bf16-mixed"})
    assert fp32.label == "r [precision=32-true]" and fp32.n == fp32.n_reference == 3
    assert fp32.result == PASS and fp32.value == pytest.approx(0.5)
    assert bf16.result == FAIL and bf16.value == pytest.approx(6.8) and bf16.p_value < 0.01
    verdicts = evaluate([rule(max=1000.0)], frame)  # no selection: every configuration
    assert [v.label for v in verdicts] == [
        "r [precision=32-true, width=0.5]", "r [precision=32-true, width=1]",
        "r [precision=bf16-mixed, width=0.5]", "r [precision=bf16-mixed, width=1]"]
    (single,) = evaluate([rule(select={"precision": "32-true", "width": 1}, max=1000.0)], frame)
    assert single.label == "r" and single.configuration == {} and single.n == 3


def test_the_reference_differs_only_in_what_relative_to_names() -> None:
    frame = table(precision_runs("32-true", 1.0, [100.0, 101.0, 99.0]),
                  precision_runs("32-true", 0.5, [50.0, 51.0, 49.0]),
                  precision_runs("32-true", 1.0, [1000.0, 1010.0, 990.0], model="vae"))
    (verdict,) = evaluate([rule(select={"model": "gan", "width": 0.5},
                                relative_to={"width": 1.0}, max_ratio=0.8)], frame)
    assert verdict.n_reference == 3 and verdict.value == pytest.approx(0.5)  # gan's, not vae's


def test_a_reference_of_another_configuration_only_is_bad_input() -> None:
    frame = table(precision_runs("32-true", 1.0, [100.0]),
                  precision_runs("bf16-mixed", 0.5, [50.0]))
    with pytest.raises(UserError, match="but none with the same precision=bf16-mixed"):
        evaluate([rule(select={"width": 0.5}, relative_to={"width": 1.0}, max_ratio=0.8)],
                 frame)


@pytest.mark.parametrize("reference", [[0.0, 0.0], [-1.0, -3.0]])
def test_a_reference_mean_not_above_0_is_bad_input(reference: list[float]) -> None:
    frame = table(runs(1.0, reference), runs(0.5, [5.0, 6.0]))
    with pytest.raises(UserError, match=r"the reference mean of energy_train_j is -?[0-9]"):
        evaluate([rule(select={"width": 0.5}, relative_to={"width": 1.0}, max_ratio=0.8)],
                 frame)
    with pytest.raises(UserError, match="a ratio needs a reference above 0"):
        evaluate([rule(select={"width": 0.5}, max_ratio=0.8)], table(runs(0.5, [5.0])),
                 baseline=table(runs(0.5, reference)))


def test_tolerance_widens_a_bound_whatever_its_sign() -> None:
    assert rule(max=-10.0, tolerance=0.1).effective_bound == pytest.approx(-9.0)
    assert rule(min=-10.0, tolerance=0.1).effective_bound == pytest.approx(-11.0)
    assert rule(max=10.0, tolerance=0.1).effective_bound == pytest.approx(11.0)
    assert rule(min_ratio=0.5, tolerance=0.1).effective_bound == pytest.approx(0.45)


def test_ratio_rules_are_decided_on_means_only() -> None:
    with pytest.raises(ValueError, match="statistic upper_ci goes with an absolute bound"):
        rule(relative_to={"width": 1.0}, max_ratio=0.8, statistic="upper_ci")


def test_selections_match_numbers_by_value_and_take_text_for_text_fields() -> None:
    frame = table(runs(1.0, [10.0]))
    (verdict,) = evaluate([rule(select={"width": 1, "model": "gan"}, max=11.0)], frame)
    assert verdict.n == 1  # 1 is 1.0
    with pytest.raises(ValueError, match=r"select\.model\n  Input should be a valid string"):
        rule(select={"model": 1}, max=11.0)
    with pytest.raises(ValueError, match="expected a number, got the text"):
        rule(select={"width": "1.0"}, max=11.0)


def test_rules_over_runs_on_a_gpu_not_theirs_alone_warn_unless_they_bound_cpu_or_ram() -> None:
    from greenbench.check.budget import shared_node_warnings

    frame = table(runs(1.0, [10.0, 11.0]), runs(0.5, [5.0, 6.0]))
    frame["gpu_shared"] = [True, False, False, False]
    frame["node_concurrency"] = 1
    rules = [Rule(name=name, metric=metric, max=100.0) for name, metric in (
        ("all", "energy_fit_j"), ("gpu", "energy_fit_gpu_j"), ("cpu", "energy_fit_cpu_j"))]

    lines = shared_node_warnings(rules, frame)

    assert [line.split(":")[0] for line in lines] == ["rule 'all'", "rule 'gpu'"]
    assert "1 of its 4 runs drew GPU energy on a GPU not theirs alone (scope shared_device" \
        in lines[0]
    frame["gpu_shared"] = False
    assert shared_node_warnings(rules, frame) == []
