"""Report tables from hand-written records with known values: means, intervals, ratios,
Pareto marks and status counts, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from greenbench import results
from greenbench.records import CONFIGURATION_KEYS
from greenbench.report import builder, tables
from tests.helpers import record

T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom


def summary_of(records: list[dict]):
    summary = tables.summarise(results.frame(records))
    return summary.set_index("label")


def test_means_intervals_and_status_counts() -> None:
    summary = summary_of([
        record("a", seed=0, train_j=100.0, kid=0.4),
        record("b", seed=1, train_j=110.0, kid=0.5),
        record("c", seed=2, train_j=120.0, kid=0.6),
        record("d", seed=3, status="failed", reason="boom"),
        record("e", seed=4, status="diverged", reason="loss became nan at step 3"),
    ])
    row = summary.loc["gan 32-true w=1 f=1"]
    assert row["n"] == 3 and row["n_failed"] == 1 and row["n_diverged"] == 1
    assert row["n_skipped"] == 0
    assert row["energy_train_j_mean"] == pytest.approx(110.0)  # failed runs not averaged in
    assert row["energy_train_j_sd"] == pytest.approx(10.0)
    assert row["energy_train_j_ci"] == pytest.approx(T_975_2 * 10.0 / math.sqrt(3))
    assert row["kid_mean"] == pytest.approx(0.5)
    assert row["kid_ci"] == pytest.approx(T_975_2 * 0.1 / math.sqrt(3))
    assert "boom" in row["reasons"]
    assert not row["measured"]
    assert row["sources"] == "cpu: codecarbon_cpu_load_estimate"


def test_one_run_has_no_interval_and_a_group_without_ok_runs_has_no_numbers() -> None:
    summary = summary_of([
        record("a", train_j=100.0),
        record("b", precision="16-mixed", status="skipped", reason="16-mixed cannot run on cpu"),
    ])
    one = summary.loc["gan 32-true w=1 f=1"]
    assert one["n"] == 1 and math.isnan(one["energy_train_j_ci"])
    skipped = summary.loc["gan 16-mixed w=1 f=1"]
    assert skipped["n"] == 0 and skipped["n_skipped"] == 1
    assert math.isnan(skipped["energy_train_j_mean"])
    assert pd.isna(skipped["pareto"])


def test_pareto_marks_within_each_model() -> None:
    summary = summary_of([
        record("a", width=0.25, train_j=50.0, kid=0.9),   # cheapest: optimal
        record("b", width=0.5, train_j=80.0, kid=0.5),    # optimal
        record("c", width=0.75, train_j=90.0, kid=0.6),   # dominated by b
        record("d", width=1.0, train_j=120.0, kid=0.5),   # same KID, more energy: dominated
        record("e", model="vae", width=1.0, train_j=500.0, kid=2.0),  # alone: optimal
    ])
    marks = summary["pareto"].to_dict()
    assert marks == {
        "gan 32-true w=0.25 f=1": True, "gan 32-true w=0.5 f=1": True,
        "gan 32-true w=0.75 f=1": False, "gan 32-true w=1 f=1": False,
        "vae 32-true w=1 f=1": True,
    }


def test_savings_against_the_default_baseline_with_intervals() -> None:
    summary = tables.summarise(results.frame([
        record("a", seed=0, train_j=100.0, kid=0.50),
        record("b", seed=1, train_j=100.0, kid=0.50),
        record("c", seed=0, precision="bf16-mixed", train_j=60.0, kid=0.55),
        record("d", seed=1, precision="bf16-mixed", train_j=60.0, kid=0.55),
        record("e", model="vae", precision="bf16-mixed", train_j=10.0, kid=1.0),
    ]))
    savings = tables.savings(summary).set_index("label")
    bf16 = savings.loc["gan bf16-mixed w=1 f=1"]
    assert bf16["baseline"] == "gan 32-true w=1 f=1"
    assert bf16["energy_train_j_ratio"] == pytest.approx(0.6)
    # No spread on either side: the interval collapses onto the ratio.
    assert bf16["energy_train_j_ratio_low"] == pytest.approx(0.6)
    assert bf16["kid_ratio"] == pytest.approx(1.1)
    assert savings.loc["gan 32-true w=1 f=1"]["energy_train_j_ratio"] == pytest.approx(1.0)
    assert pd.isna(savings.loc["vae bf16-mixed w=1 f=1"]["baseline"])  # no vae 32-true run


def test_savings_interval_by_the_delta_method() -> None:
    summary = tables.summarise(results.frame([
        record("a", seed=0, train_j=90.0), record("b", seed=1, train_j=110.0),
        record("c", seed=0, width=0.5, train_j=45.0), record("d", seed=1, width=0.5,
                                                             train_j=55.0),
    ]))
    row = tables.savings(summary).set_index("label").loc["gan 32-true w=0.5 f=1"]
    sd_a, sd_b = math.sqrt(50.0), math.sqrt(200.0)  # of (45, 55) and (90, 110)
    se = math.sqrt((sd_a / 50) ** 2 / 2 + (sd_b / 100) ** 2 / 2)
    t = 12.706204736174698  # Student t, 97.5 %, 1 degree of freedom
    assert row["energy_train_j_ratio"] == pytest.approx(0.5)
    assert row["energy_train_j_ratio_low"] == pytest.approx(0.5 * math.exp(-t * se))
    assert row["energy_train_j_ratio_high"] == pytest.approx(0.5 * math.exp(t * se))


def test_other_baselines_and_bad_baselines() -> None:
    summary = tables.summarise(results.frame([
        record("a", precision="bf16-mixed", train_j=50.0), record("b", train_j=100.0),
    ]))
    baseline = tables.parse_baseline("precision=bf16-mixed,width=1", list(CONFIGURATION_KEYS))
    assert baseline == {"precision": "bf16-mixed", "width": 1.0}
    row = tables.savings(summary, baseline).set_index("label").loc["gan 32-true w=1 f=1"]
    assert row["energy_train_j_ratio"] == pytest.approx(2.0)
    for bad in ("precision", "colour=red", "=3"):
        with pytest.raises(ValueError):
            tables.parse_baseline(bad, list(CONFIGURATION_KEYS))


def test_mixed_extractors_split_quality_and_say_so() -> None:
    frame = results.frame([
        record("a", seed=0, kid=0.5, extractor="digits-16px-r1-aaaaaaaa"),
        record("b", seed=1, kid=0.9, extractor="digits-16px-r1-bbbbbbbb"),
    ])
    summary = tables.summarise(frame)
    assert len(summary) == 2  # never one mean over two extractors
    assert sorted(summary["kid_mean"]) == [0.5, 0.9]
    assert all("extractor" in label for label in summary["label"])


def test_shared_nodes_are_reported_per_configuration_and_in_the_notes() -> None:
    frame = results.frame([
        record("a", seed=0, node_concurrency=2),
        record("b", seed=1, node_concurrency=3),
        record("c", width=0.5, node_concurrency=1),
        record("d", width=0.25, node_concurrency=None),  # a record from before the field
    ])
    summary = tables.summarise(frame).set_index("width")
    assert list(summary.loc[[1.0, 0.5, 0.25], "node_concurrency"]) == [3, 1, 1]
    provenance = builder.energy_table(summary.reset_index()).set_index("configuration")[
        "energy source"]
    assert provenance.str.endswith("cpu and ram shared by up to 3 points").sum() == 1
    lines = [line for line in builder.notes(frame, summary.reset_index()) if "shared" in line]
    assert lines == [lines[0]] and "1 of 3 configurations" in lines[0] and "up to 3" in lines[0]
