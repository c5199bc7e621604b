"""Report tables from hand-written records with known values: means, intervals, ratios,
Pareto marks and status counts, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from greenbench import results
from greenbench.records import CONFIGURATION_FIELDS
from greenbench.report import builder, notes, tables
from tests.helpers import record as hand_written

T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom


def record(run_id: str, *args, train_j: float | None = 100.0, warmup_j: float | None = 0.0,
           warmup_s: float = 1.0, **kwargs) -> dict:
    """A schema 2 record from before the fit window: a warm-up window and a train window of
    ``train_j`` joules over 10 s, no fit window (the loader adds the two up). The tables of
    this module are worked out by hand from these legacy records on purpose; the other reader
    tests use records of the current schema (``tests.helpers.record``)."""
    content = hand_written(run_id, *args, **kwargs)
    content["schema"] = 2
    if content["energy"] is not None:
        windows = content["energy"]["windows"]
        del windows["fit"]
        train = windows["train"]
        train.update(total_j=train_j, duration_s=10.0, samples=640)
        train["components"]["cpu"]["joules"] = train_j
        windows["total"]["total_j"] = train_j
        windows["total"]["components"]["cpu"]["joules"] = train_j
        if warmup_j is None:
            del windows["warmup"]
        else:
            windows["warmup"] = {
                "total_j": warmup_j, "net_j": None, "duration_s": warmup_s, "samples": 64,
                "components": {"cpu": {"joules": warmup_j,
                                       "source": "codecarbon_cpu_load_estimate"}}}
    return content


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
    assert bf16["energy_fit_j_ratio"] == pytest.approx(0.6)
    # No spread on either side: the interval collapses onto the ratio.
    assert bf16["energy_fit_j_ratio_low"] == pytest.approx(0.6)
    assert bf16["kid_ratio"] == pytest.approx(1.1)
    assert savings.loc["gan 32-true w=1 f=1"]["energy_fit_j_ratio"] == pytest.approx(1.0)
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
    assert row["energy_fit_j_ratio"] == pytest.approx(0.5)
    assert row["energy_fit_j_ratio_low"] == pytest.approx(0.5 * math.exp(-t * se))
    assert row["energy_fit_j_ratio_high"] == pytest.approx(0.5 * math.exp(t * se))


def test_other_baselines_and_bad_baselines() -> None:
    summary = tables.summarise(results.frame([
        record("a", precision="bf16-mixed", train_j=50.0), record("b", train_j=100.0),
    ]))
    baseline = tables.parse_baseline("precision=bf16-mixed,width=1", list(CONFIGURATION_FIELDS))
    assert baseline == {"precision": "bf16-mixed", "width": 1.0}
    row = tables.savings(summary, baseline).set_index("label").loc["gan 32-true w=1 f=1"]
    assert row["energy_fit_j_ratio"] == pytest.approx(2.0)
    for bad in ("precision", "colour=red", "=3"):
        with pytest.raises(ValueError):
            tables.parse_baseline(bad, list(CONFIGURATION_FIELDS))


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
    lines = [line for line in notes.notes(frame, summary.reset_index()) if "shared" in line]
    assert lines == [lines[0]] and "1 of 3 configurations" in lines[0] and "up to 3" in lines[0]


def test_gpu_energy_not_a_runs_alone_is_marked_per_configuration_and_in_the_notes() -> None:
    shared = hand_written("a", seed=0)
    for window in shared["energy"]["windows"].values():
        window["components"]["gpu"]["scope"] = "shared_device"
    frame = results.frame([shared, hand_written("b", seed=1), hand_written("c", width=0.5)])
    assert frame.set_index("run_id")["gpu_shared"].to_dict() == {"a": True, "b": False,
                                                                  "c": False}
    summary = tables.summarise(frame).set_index("width")
    assert summary.loc[1.0, "gpu_shared"] and not summary.loc[0.5, "gpu_shared"]
    provenance = builder.energy_table(summary.reset_index()).set_index("configuration")[
        "energy source"]
    assert provenance.str.endswith("gpu not the runs' alone (shared_device)").sum() == 1
    lines = [line for line in notes.notes(frame, summary.reset_index())
             if "shared_device" in line]
    assert len(lines) == 1 and lines[0].startswith("GPU energy of 1 of 2 configurations")


# ---------------------------------------------------------------------------------------------
# Training energy (warm-up plus train), the steady state, record warnings


def test_training_energy_is_warmup_plus_train_and_decides_pareto_and_savings() -> None:
    frame = results.frame([
        # On the train window alone, w=0.5 would look cheaper (50 J against 100 J); counting
        # its long warm-up it costs more (150 J against 100 J).
        record("a", train_j=100.0, warmup_j=0.0, kid=0.5),
        record("b", width=0.5, train_j=50.0, warmup_j=100.0, warmup_s=4.0, kid=0.5),
    ])
    assert frame.set_index("run_id")["energy_fit_j"].to_dict() == {"a": 100.0, "b": 150.0}
    assert frame.set_index("run_id").loc["b", "duration_fit_s"] == pytest.approx(14.0)
    assert frame.set_index("run_id").loc["b", "energy_fit_cpu_j"] == pytest.approx(150.0)
    summary = tables.summarise(frame)
    indexed = summary.set_index("label")
    assert indexed["pareto"].to_dict() == {"gan 32-true w=0.5 f=1": False,
                                           "gan 32-true w=1 f=1": True}
    assert indexed.loc["gan 32-true w=0.5 f=1", "energy_train_j_mean"] == 50.0  # steady state
    ratio = tables.savings(summary).set_index("label").loc["gan 32-true w=0.5 f=1"]
    assert ratio["energy_fit_j_ratio"] == pytest.approx(1.5)
    table = builder.energy_table(summary).set_index("configuration")
    assert table.loc["gan 32-true w=0.5 f=1", "training energy (J)"] == "150 (one run)"
    assert table.loc["gan 32-true w=0.5 f=1", "steady-state energy (J)"] == "50"
    assert builder.savings_table(tables.savings(summary)).set_index("configuration").loc[
        "gan 32-true w=0.5 f=1", "training energy ratio"] == "1.5"


def test_a_record_fit_window_is_read_as_it_is() -> None:
    content = record("a", train_j=100.0, warmup_j=10.0)
    content["energy"]["windows"]["fit"] = {"total_j": 111.0, "net_j": 50.0, "duration_s": 11.5,
                                           "components": {"cpu": {"joules": 111.0}}}
    row = results.frame([content]).iloc[0]
    assert (row["energy_fit_j"], row["energy_fit_net_j"], row["duration_fit_s"]) == (
        111.0, 50.0, 11.5)
    assert row["energy_fit_cpu_j"] == 111.0 and row["energy_train_j"] == 100.0
    # Without a warm-up window, nothing is invented: the fit of an older record is unknown.
    assert pd.isna(results.frame([record("b", warmup_j=None)]).iloc[0]["energy_fit_j"])


def warmup_only(run_id: str, new_style: bool, **kwargs) -> dict:
    """A run whose training ended inside warm-up: as the monitor wrote it before the fit window
    (a train window of 0 s and 0 J) or after (an empty train window and a fit window)."""
    content = record(run_id, warmup_j=30.0, warmup_s=3.0, **kwargs)
    train = content["energy"]["windows"]["train"]
    train.update(duration_s=0.0, samples=0, total_j=None if new_style else 0.0,
                 j_per_1k_samples=None, net_j=None if new_style else 0.0)
    train["components"]["cpu"]["joules"] = None if new_style else 0.0
    if new_style:
        content["energy"]["windows"]["fit"] = {"total_j": 30.0, "duration_s": 3.0,
                                               "components": {"cpu": {"joules": 30.0}}}
        content["energy"]["warnings"] = ["the run never left warm-up: its train window "
                                         "(steady state, J per 1,000 samples) is empty"]
    return content


def test_a_run_that_never_left_warmup_has_no_steady_state_and_is_named() -> None:
    frame = results.frame([
        warmup_only("old1", new_style=False, seed=0), warmup_only("new1", new_style=True, seed=1),
        record("c", width=0.5, seed=0, train_j=80.0, warmup_j=20.0),
    ])
    rows = frame.set_index("run_id")
    for run_id in ("old1", "new1"):
        assert bool(rows.loc[run_id, "warmup_only"])
        assert rows.loc[run_id, "energy_fit_j"] == 30.0  # training energy: all warm-up
        for column in ("energy_train_j", "energy_train_cpu_j", "j_per_1k_samples"):
            assert pd.isna(rows.loc[run_id, column]), (run_id, column)  # empty, never 0
    assert not rows.loc["c", "warmup_only"]
    summary = tables.summarise(frame)
    indexed = summary.set_index("label")
    assert math.isnan(indexed.loc["gan 32-true w=1 f=1", "energy_train_j_mean"])
    assert indexed.loc["gan 32-true w=1 f=1", "energy_fit_j_mean"] == 30.0
    table = builder.energy_table(summary).set_index("configuration")
    assert table.loc["gan 32-true w=1 f=1", "steady-state energy (J)"] == "-"
    assert table.loc["gan 32-true w=1 f=1", "steady-state J per 1k samples"] == "-"
    lines = [line for line in notes.notes(frame, summary) if "never left warm-up" in line]
    assert lines[0].startswith("2 runs never left warm-up")
    assert "gan 32-true w=1 f=1: 2 runs (new1, old1)" in lines[0]
    assert "w=0.5" not in lines[0]


def with_warnings(run_id: str, warnings: list[str], **kwargs) -> dict:
    content = record(run_id, **kwargs)
    content["energy"]["warnings"] = warnings
    return content


IDLE = ("the meters cannot tell training from idle here: the train window drew {} W against "
        "20.1 W idle (within 5 % or two standard deviations of the idle segments), so energy "
        "here is proportional to time")


def test_every_record_warning_is_in_the_notes_grouped_and_counted() -> None:
    frame = results.frame([
        with_warnings("a", ["train: net energy -0.5 J is below zero; clamped to 0",
                            "no valid idle baseline: net energy is not computed"], seed=0),
        with_warnings("b", ["train: net energy -1.25 J is below zero; clamped to 0",
                            "no valid idle baseline: net energy is not computed"], seed=1),
        with_warnings("c", ["train: net energy -3e-2 J is below zero; clamped to 0"], seed=2),
        with_warnings("d", ["eval: something else entirely"], width=0.5),
        with_warnings("e", [], width=0.25),
    ])
    lines = notes.notes(frame, tables.summarise(frame))
    assert "3 runs: train: net energy -0.5 J is below zero; clamped to 0 (the numbers differ " \
           "from run to run)" in lines
    assert "2 runs: no valid idle baseline: net energy is not computed" in lines
    assert "1 run: eval: something else entirely" in lines
    assert sum("net energy" in line for line in lines) == 2  # grouped, not one line per run


def test_training_that_looks_like_idle_is_explained_per_configuration() -> None:
    frame = results.frame([
        with_warnings("a", [IDLE.format("20.3")], seed=0),
        with_warnings("b", [IDLE.format("20.2")], seed=1),
        with_warnings("c", [], seed=2),
        with_warnings("d", [IDLE.format("20.9")], precision="bf16-mixed"),
        with_warnings("e", [], width=0.5),
    ])
    lines = notes.notes(frame, tables.summarise(frame))
    plain = [line for line in lines if "proportional to time:" in line]
    assert len(plain) == 2  # one per configuration that carries the warning
    assert plain[0].startswith("gan 32-true w=1 f=1: on this machine the meters could not "
                               "tell training from idle (2 of 3 runs)")
    assert plain[1].startswith("gan bf16-mixed w=1 f=1:") and "(1 of 1 run)" in plain[1]
    assert any(line.startswith("3 runs: the meters cannot tell training from idle")
               for line in lines)  # and the warning itself, counted


def test_values_of_the_wrong_type_are_repaired_and_reported() -> None:
    records = [record("a", seed=0, flops=2**64), record("b", seed=1, flops="12"),
               record("c", seed=2, flops=3), record("d", seed=3)]
    records[3]["energy"]["windows"]["train"]["total_j"] = "lots"
    records[3]["config"]["model"] = 7  # text column: kept as text
    records[2]["energy"]["windows"]["total"]["measured"] = "yes"
    problems: list[str] = []
    frame = results.frame(records, problems).set_index("run_id")
    assert frame["flops_per_step"].iloc[:3].tolist() == [float(2**64), 12.0, 3.0]
    assert math.isnan(frame["flops_per_step"].iloc[3])
    assert math.isnan(frame.loc["d", "energy_train_j"]) and frame.loc["d", "model"] == "7"
    assert pd.isna(frame.loc["c", "energy_measured"])
    assert problems == [
        "flops_per_step: 1 run (b) stored it as text, e.g. '12'; read as a number.",
        "energy_train_j: 1 run (d) holds a value that is not a number, e.g. 'lots'; treated as "
        "missing.",
        "energy_measured: 1 run (c) holds a value that is neither true nor false, e.g. 'yes'; "
        "treated as missing.",
    ]


def test_sampling_energy_stands_beside_quality_and_unreliable_figures_are_marked() -> None:
    runs = [record("a", train_j=100.0), record("b", precision="bf16-mixed", train_j=60.0)]
    for run, per_image in zip(runs, (0.002, 0.001), strict=True):
        run["generation"] = {"images": 1000, "batch_size": 64, "batches": 16, "seconds": 0.5,
                             "j_per_image": per_image, "images_per_s": 2000.0,
                             "ms_per_batch": 31.0, "reliable": False}
        run["energy"]["windows"]["generate"] = {
            "duration_s": 0.5, "total_j": per_image * 1000, "reliable": False,
            "reliability_reason": "0.5 s is shorter than 10 periods of CodeCarbonMeter (1 s each)"}
    frame = results.frame(runs)
    summary = tables.summarise(frame)
    quality = builder.quality_table(summary).set_index("configuration")
    assert quality.loc["gan 32-true w=1 f=1", "sampling J per 1k images"] == "2 *"
    assert quality.loc["gan bf16-mixed w=1 f=1", "sampling J per 1k images"] == "1 *"
    assert "KID" in quality and "training energy (J)" in quality
    (line,) = [n for n in notes.notes(frame, summary) if n.startswith("Figures marked *")]
    assert "the generate window of 2 runs in 2 configurations" in line
    assert "shorter than 10 periods of CodeCarbonMeter" in line
