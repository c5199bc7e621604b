"""A greener sweep: points that stop at their quality target, and a plan that predicts a
sweep's training energy from a short pilot of each configuration before it is paid for."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from greenbench.point.run import run_point
from greenbench.records import RunSpec
from greenbench.sweep import plan
from tests.helpers import (
    CLASS_SWEEP,
    PROJECT,
    class_spec,
    cli,
    record,
    tiny_spec,
    write_class_sweep,
    write_sweep,
)

VAL_ACC = {"metric": "val_acc", "mode": "max"}


# --------------------------------------------------------------------------- stop at target


def test_a_point_stops_at_the_first_validation_that_reaches_its_target(workdir: Path) -> None:
    spec = class_spec(workdir, epochs=30, steps=None, stop_at_target=True,
                      quality={**VAL_ACC, "target": 0.6})
    result = run_point(spec).record
    assert result["status"] == "ok", result["reason"]
    train, quality, curve = result["train"], result["quality"], result["quality_curve"]
    assert train["stopped_by"] == "target"
    assert train["batches"] < 30 * 4  # four batches an epoch: it did not train its budget
    reached = quality["target_reached_at"]
    assert quality["target_reached"] is True and quality["target"] == 0.6
    assert reached["batches"] == train["batches"] == train["stopped_at"]["batches"]
    assert reached["epoch"] == curve[-1]["epoch"] == train["stopped_at"]["epoch"] + 1
    # the epochs before it did not reach it; the last did, and its energy is measured there
    assert all(point["val_acc"] < 0.6 for point in curve[:-1]) and curve[-1]["val_acc"] >= 0.6
    assert quality["energy_to_quality_j"] == curve[-1]["fit_j"]
    assert 0 < quality["energy_to_quality_j"] <= result["energy"]["windows"]["fit"]["total_j"]


def test_a_point_that_never_reaches_its_target_trains_its_budget_and_says_so(
        workdir: Path) -> None:
    spec = class_spec(workdir, epochs=3, steps=None, stop_at_target=True,
                      quality={**VAL_ACC, "target": 1.01})  # an accuracy never gets there
    result = run_point(spec).record
    assert result["status"] == "ok", result["reason"]
    assert result["train"]["stopped_by"] == "budget" and result["train"]["batches"] == 12
    assert result["quality"]["target_reached"] is False
    assert result["quality"]["target_reached_at"] is None
    assert result["quality"]["energy_to_quality_j"] is None


def test_kid_is_a_target_a_reference_model_stops_at() -> None:
    evaluation = {**tiny_spec().config["eval"], "every_n_epochs": 1, "target_kid": 1e6}
    result = run_point(tiny_spec(epochs=3, steps=None, data_fraction=0.25, eval=evaluation,
                                 stop_at_target=True)).record
    assert result["status"] == "ok", result["reason"]
    assert result["train"]["stopped_by"] == "target"
    assert result["train"]["stopped_at"]["epoch"] == 0  # the first scoring reached it
    assert result["quality"]["target_reached"] is True
    assert result["quality_curve"][0]["kid"] <= 1e6
    assert result["quality"]["energy_to_quality_j"] == result["quality_curve"][0]["fit_j"]


def test_without_a_target_nothing_is_reached_and_nothing_stops() -> None:
    result = run_point(tiny_spec(steps=3)).record
    assert result["quality"]["target_reached"] is None
    assert result["train"]["stopped_by"] == "budget"


def test_stop_at_target_is_part_of_the_run_id_and_absent_when_off(workdir: Path) -> None:
    from greenbench.sweep.schema import expand, load_sweep
    sweep_file = write_class_sweep(workdir)
    (plain,) = expand(load_sweep(sweep_file))
    text = sweep_file.read_text().replace("quality: {metric: val_acc, mode: max}",
                                          "quality: {metric: val_acc, mode: max, target: 0.9}")
    runs = {}
    for value in ("false", "true"):
        sweep_file.write_text(text.replace("train: {steps: 2}",
                                           f"train: {{steps: 2, stop_at_target: {value}}}"))
        (runs[value],) = expand(load_sweep(sweep_file))
    assert "stop_at_target" not in plain.config and "stop_at_target" not in runs["false"].config
    assert runs["true"].config["stop_at_target"] is True
    assert runs["true"].run_id != runs["false"].run_id


@pytest.mark.parametrize(("quality", "train", "expected"), [
    ("{metric: val_acc, mode: max}", "{steps: 2, stop_at_target: true}",
     "train.stop_at_target: needs a target to stop at; set quality.target"),
    ("{metric: val_acc, mode: max, target: 0.9}", "{steps: 2, stop_at_target: 1}",
     "train.stop_at_target"),
])
def test_a_stop_without_a_target_is_one_line_exit_2_and_nothing_written(
        workdir: Path, quality: str, train: str, expected: str) -> None:
    sweep_file = write_class_sweep(workdir)
    text = sweep_file.read_text().replace("{metric: val_acc, mode: max}", quality)
    sweep_file.write_text(text.replace("train: {steps: 2}", f"train: {train}"))
    done = cli("run", str(sweep_file), cwd=workdir)
    assert done.returncode == 2
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (workdir / "runs").exists()


def test_kid_as_a_target_needs_scoring_along_training(workdir: Path) -> None:
    sweep_file = write_sweep(workdir)
    text = sweep_file.read_text().replace("eval: {num_samples: 50, importance_samples: 4}",
                                          "eval: {num_samples: 50, target_kid: 0.5}")
    sweep_file.write_text(text.replace("train: {steps: 4}",
                                       "train: {steps: 4, stop_at_target: true}"))
    done = cli("run", str(sweep_file), "--dry-run", cwd=workdir)
    assert done.returncode == 2
    assert "train.stop_at_target: kid is scored from samples at the end of training only; " \
        "set eval.every_n_epochs" in done.stderr
    sweep_file.write_text(sweep_file.read_text().replace("target_kid: 0.5",
                                                         "target_kid: 0.5, every_n_epochs: 1"))
    assert cli("run", str(sweep_file), "--dry-run", cwd=workdir).returncode == 0


def test_the_report_counts_who_reached_the_target_and_names_the_least_energy_to_it(
        workdir: Path) -> None:
    from greenbench import results
    from greenbench.report import builder, notes, tables

    target = {"config": {"stop_at_target": True}}
    runs = [  # half-width reaches the target twice, on less energy; full width once in two
        record("a", width=0.5, seed=0, quality={"target_reached": True,
                                                 "energy_to_quality_j": 20.0}, **target),
        record("b", width=0.5, seed=1, quality={"target_reached": True,
                                                 "energy_to_quality_j": 30.0}, **target),
        record("c", width=1.0, seed=0, quality={"target_reached": True,
                                                 "energy_to_quality_j": 15.0}, **target),
        record("d", width=1.0, seed=1, quality={"target_reached": False,
                                                 "energy_to_quality_j": None}, **target),
        record("e", width=0.25, quality={"target_reached": False}, **target),
    ]
    for run in runs:
        run["config"]["eval"] = {"target_kid": 0.3}
        run["quality"]["target"] = 0.3
    frame = results.frame(runs)
    assert frame["stop_at_target"].tolist() == [True] * 5
    summary = tables.summarise(frame)
    table = builder.quality_table(summary).set_index("configuration")
    assert table.loc["gan 32-true w=0.5 f=1", "reached the target"] == "2 of 2"
    assert table.loc["gan 32-true w=1 f=1", "reached the target"] == "1 of 2"
    assert table.loc["gan 32-true w=0.25 f=1", "reached the target"] == "0 of 1"
    assert table.loc["gan 32-true w=1 f=1", "training energy to target KID (J)"] == "15"
    lines = notes.notes(frame, summary)
    assert ("Target kid 0.3: reached by runs of 2 of 3 configurations; the least training "
            "energy to it: gan 32-true w=1 f=1, 15 J (1 of 2 runs reached it).") in lines
    without = builder.quality_table(tables.summarise(results.frame([record("x")])))
    assert "reached the target" not in without  # no column where no run had a target


def test_stopping_at_the_target_is_a_configuration_of_its_own(workdir: Path) -> None:
    from greenbench import results
    from greenbench.report import tables

    full = record("full", fit_j=100.0)
    stopped = record("stopped", fit_j=40.0, config={"stop_at_target": True})
    summary = tables.summarise(results.frame([full, stopped]))
    assert sorted(summary["energy_fit_j_mean"]) == [40.0, 100.0]
    assert sorted(summary["label"]) == ["gan 32-true w=1 f=1 stop_at_target=False",
                                        "gan 32-true w=1 f=1 stop_at_target=True"]


# --------------------------------------------------------------------------- the prediction


def pilot_record(segments: list[tuple[int, float, float]], validations: list[float],
                 batches_per_epoch: int = 10, warmup: tuple[float, float] = (5.0, 0.5),
                 val_check_batch: int | None = 10, every_epoch: int | None = 1,
                 eval_j: float | None = None, curve: list[dict] | None = None) -> dict:
    measured = sum(batches for batches, _, _ in segments)
    window = {"total_j": None, "duration_s": 0.0}
    return {
        "status": "ok", "train": {"batches": 2 + measured},
        "energy": {"windows": {"warmup": {"total_j": warmup[0], "duration_s": warmup[1]},
                               "eval": {**window, "total_j": eval_j},
                               "idle": window, "total": window}},
        "quality_curve": curve or [],
        "pilot": {"requested_batches": measured, "measured_batches": measured,
                  "segments": [{"batches": b, "j": j, "s": s} for b, j, s in segments],
                  "validations": [{"j": j, "s": j / 10, "during_fit": True,
                                   "in_warmup": False} for j in validations],
                  "batches_per_epoch": batches_per_epoch, "val_check_batch": val_check_batch,
                  "check_val_every_n_epoch": every_epoch,
                  "validates": val_check_batch is not None},
    }


def point(epochs: int | None = 3, steps: int | None = None, **config) -> RunSpec:
    spec = tiny_spec(epochs=epochs, steps=steps, **config)
    return dataclasses.replace(spec, energy={**spec.energy, "warmup_steps": 2})


def test_the_prediction_is_warmup_plus_batches_times_the_rate_plus_validations() -> None:
    pilot = pilot_record([(4, 4.0, 0.4), (4, 4.8, 0.44), (4, 3.2, 0.36)], [1.5, 2.5])
    predicted = plan.predict(pilot, point(epochs=3))
    # 30 batches: 2 in warm-up (5 J), 28 at 1 J each, 3 validations at 2 J
    assert predicted["predicted_batches"] == 30 and predicted["predicted_validations"] == 3
    assert predicted["predicted_fit_j"] == pytest.approx(5 + 28 * 1.0 + 3 * 2.0)
    assert predicted["predicted_fit_s"] == pytest.approx(0.5 + 28 * 0.1 + 3 * 0.2)
    # the interval: the t-interval of the stretches' rates (1.0, 1.2, 0.8), times 28 batches
    half = 4.302653 * 0.2 / 3 ** 0.5 * 28
    assert predicted["predicted_fit_j_low"] == pytest.approx(39 - half, rel=1e-5)
    assert predicted["predicted_fit_j_high"] == pytest.approx(39 + half, rel=1e-5)
    assert predicted["upper_bound"] is False


def test_a_budget_in_steps_and_validations_that_are_not_every_epoch() -> None:
    pilot = pilot_record([(5, 5.0, 0.5), (5, 5.0, 0.5)], [2.0], batches_per_epoch=10,
                         val_check_batch=5, every_epoch=2)
    predicted = plan.predict(pilot, point(epochs=None, steps=47))
    # epochs 2 and 4 validate twice each; 7 batches into the fifth, which does not validate,
    # then one more where the budget ends fit
    assert predicted["predicted_batches"] == 47
    assert predicted["predicted_validations"] == 5
    assert predicted["predicted_fit_j"] == pytest.approx(5 + 45 * 1.0 + 5 * 2.0)
    probe = pilot["pilot"]
    assert plan.validation_count(47, {**probe, "validates": False}) == 0
    assert plan.validation_count(47, {**probe, "check_val_every_n_epoch": None}) == 10


def test_scoring_along_training_is_predicted_per_scoring() -> None:
    pilot = pilot_record([(4, 4.0, 0.4), (4, 4.0, 0.4)], [], val_check_batch=None,
                         eval_j=3.0, curve=[{"epoch": 1, "kid": 0.5}])
    evaluation = {**tiny_spec().config["eval"], "every_n_epochs": 2}
    predicted = plan.predict(pilot, point(epochs=5, eval=evaluation))
    assert predicted["predicted_validations"] == 0
    assert predicted["predicted_eval_j"] == pytest.approx(3 * 3.0)  # epochs 2, 4 and the end


def test_a_point_that_may_stop_early_is_predicted_as_an_upper_bound() -> None:
    pilot = pilot_record([(4, 4.0, 0.4), (4, 4.0, 0.4)], [1.0])
    assert plan.predict(pilot, point(stop_at_target=True))["upper_bound_why"] == \
        "stop_at_target"
    early = {"callbacks": [{"class_path": "lightning.pytorch.callbacks.EarlyStopping",
                            "init_args": {"monitor": "val_acc"}}]}
    assert plan.predict(pilot, point(trainer=early))["upper_bound_why"] == "EarlyStopping"


def test_a_shared_idle_baseline_is_counted_once_in_the_pilots_cost() -> None:
    def pilot(run_id: str, taken_by: str | None) -> dict:
        windows = {"idle": {"total_j": 100.0, "duration_s": 5.0},
                   "total": {"total_j": 20.0, "duration_s": 1.0}}
        baseline = {"shared": True, "taken_by": taken_by} if taken_by else {"shared": False}
        return {"status": "ok", "energy": {"windows": windows, "baseline": baseline}}

    specs = [point(seed=0, width=0.25), point(seed=0, width=0.5)]
    first, second = (spec.run_id for spec in specs)
    rows = [plan._pilot_row(spec, pilot(spec.run_id, taken_by=first)) for spec in specs]
    assert [row["j"] for row in rows] == [120.0, 20.0]  # the first took the baseline
    assert plan._pilot_row(specs[1], pilot(second, taken_by=None))["j"] == 120.0  # its own


def test_one_pilot_per_configuration_never_stopping_at_its_target() -> None:
    specs = [point(seed=seed, width=width, stop_at_target=True)
             for width in (0.25, 0.5) for seed in (0, 1, 2)]
    pilots = plan.pilots(specs, batches=8)
    assert [len(points) for _, points in pilots] == [3, 3]
    for pilot, points in pilots:
        assert pilot.run_id == points[0].run_id and pilot.pilot == {"batches": 8}
        assert "stop_at_target" not in pilot.config
        assert pilot.generate["num_images"] == 0


def test_a_pilot_measures_its_batches_in_stretches_and_its_validations_apart(
        workdir: Path) -> None:
    spec = class_spec(workdir, epochs=40, steps=None)
    spec = dataclasses.replace(spec, energy={**spec.energy, "warmup_steps": 3},
                               pilot={"batches": 10})
    result = run_point(spec).record
    assert result["status"] == "ok", result["reason"]
    probe = result["pilot"]
    assert probe["measured_batches"] == 10 and result["train"]["batches"] == 13
    assert sum(s["batches"] for s in probe["segments"]) == 10
    assert len(probe["segments"]) >= 5
    assert probe["batches_per_epoch"] == 4 and probe["val_check_batch"] == 4
    # epochs end at batches 4, 8 and 12, and the pilot's stop at 13 validates once more
    assert len(probe["validations"]) == 4
    assert all(v["j"] > 0 and v["s"] > 0 for v in probe["validations"])
    steady = sum(s["j"] for s in probe["segments"]) + sum(
        v["j"] for v in probe["validations"] if not v["in_warmup"])
    # the stretches and validations lie inside the train window and cover most of it: what
    # they leave out is the hooks between them (milliseconds, a tenth of this tiny point)
    train = result["energy"]["windows"]["train"]["total_j"]
    assert 0.75 * train <= steady <= train * (1 + 1e-9)


def test_a_pilots_logger_writes_a_run_of_its_own(workdir: Path) -> None:
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
              "init_args": {"save_dir": str(workdir / "logs")}}
    spec = class_spec(workdir, trainer={"logger": logger})
    pilot = dataclasses.replace(spec, pilot={"batches": 1})
    assert run_point(pilot).record["status"] == "ok"
    assert [p.name for p in (workdir / "logs" / "lightning_logs").iterdir()] == [
        f"{spec.run_id}-pilot"]


# --------------------------------------------------------------------------- greenbench plan

# the tiny classifier of CLASS_SWEEP for six epochs, two learning rates, two seeds
PLAN_SWEEP = CLASS_SWEEP.replace("train: {steps: 2}", "train: {epochs: 6}") + """\
grid:
  seed: [0, 1]
  model.init_args.lr: [0.01, 0.05]
"""


def write_plan_sweep(folder: Path) -> Path:
    shutil.copy(PROJECT, folder / "tinyproject.py")
    return write_sweep(folder, base=PLAN_SWEEP)


def test_plan_predicts_every_point_then_dry_run_and_report_show_it(workdir: Path) -> None:
    sweep_file = write_plan_sweep(workdir)
    done = cli("plan", str(sweep_file), "--pilot-steps", "6", cwd=workdir)
    assert done.returncode == 0, done.stderr
    folder = workdir / "runs" / "tiny"
    written = json.loads((folder / "plan.json").read_text())
    assert len(written["points"]) == 4 and len(written["pilots"]) == 2  # seeds share one
    for entry in written["points"]:
        assert entry["predicted_fit_j_low"] <= entry["predicted_fit_j"] <= \
            entry["predicted_fit_j_high"]
        assert entry["predicted_fit_s"] > 0 and entry["predicted_batches"] == 24
        assert set(entry["configuration"]) >= {"model", "precision", "width"}
        assert "seed" not in entry["configuration"]
    assert written["total_predicted_fit_j"] == pytest.approx(
        sum(entry["predicted_fit_j"] for entry in written["points"]))
    assert written["pilot_j"] > 0 and written["pilot_s"] > 0
    assert sorted(p.name for p in (folder / "pilots").glob("*.json")) == sorted(
        f"{pilot['run_id']}.json" for pilot in written["pilots"])
    assert not (folder / "records").exists() or not any((folder / "records").iterdir())
    printed = done.stdout
    assert "training energy per point (J)" in printed and "sweep: 4 points" in printed
    assert "pilots: 2," in printed and "% of the predicted training energy" in printed

    dry = cli("run", str(sweep_file), "--dry-run", cwd=workdir)
    assert dry.stdout.count(" predicted ") == 4
    assert "plan.json predicts" in dry.stdout

    again = cli("plan", str(sweep_file), "--pilot-steps", "6", cwd=workdir)  # pilots kept
    assert "2 already recorded, 0 to run" in again.stderr

    assert cli("run", str(sweep_file), cwd=workdir).returncode == 0
    report = cli("report", str(folder), cwd=workdir)
    assert report.returncode == 0, report.stderr
    text = (folder / "report" / "report.md").read_text()
    assert "| predicted (J) | prediction error |" in text
    assert "Predicted training energy (plan.json) against measured: median absolute error" in text
    csv = (folder / "report" / "results.csv").read_text()
    assert "predicted_fit_j" in csv.splitlines()[0]


def test_a_plan_of_a_recorded_sweep_gives_the_prediction_error(workdir: Path) -> None:
    from greenbench import results
    from greenbench.report import builder, tables

    sweep_file = write_plan_sweep(workdir)
    sweep_file.write_text(PLAN_SWEEP.replace("seed: [0, 1]", "seed: [0]"))  # one run each
    assert cli("run", str(sweep_file), cwd=workdir).returncode == 0
    assert cli("plan", str(sweep_file), "--pilot-steps", "6", cwd=workdir).returncode == 0
    folder = workdir / "runs" / "tiny"
    frame = builder.with_predictions(results.load([folder]), results.predictions([folder]))
    summary = tables.summarise(frame)
    measured, predicted = summary["energy_fit_j_mean"], summary["predicted_fit_j_mean"]
    assert (summary["prediction_error"] == predicted / measured - 1).all()
    assert summary["prediction_error"].notna().all()


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_a_pilot_of_no_batches_is_one_line_exit_2_and_nothing_written(
        workdir: Path, steps: str) -> None:
    sweep_file = write_plan_sweep(workdir)
    done = cli("plan", str(sweep_file), "--pilot-steps", steps, cwd=workdir)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --pilot-steps: give 1 or more training batches"
    assert not (workdir / "runs").exists()


def test_a_plan_that_is_not_readable_is_ignored(workdir: Path) -> None:
    from greenbench import results

    (workdir / "plan.json").write_text("[1, 2]")
    assert results.read_plan(workdir) is None
    assert results.predictions([workdir]).empty
    (workdir / "plan.json").write_text(json.dumps({"schema": 1, "points": [
        {"run_id": "a", "predicted_fit_j": "12", "upper_bound": True}, {"run_id": 3}]}))
    rows = results.predictions([workdir])
    assert rows["run_id"].tolist() == ["a"] and rows["predicted_fit_j"].isna().all()
    assert rows["prediction_upper_bound"].tolist() == [True]


def test_a_target_reached_by_the_score_at_the_end_of_training_is_reached(workdir: Path) -> None:
    """A module that validates every epoch and is scored only at the end: its last point is
    made by the last validation and scored after fit, and that score reaches the target."""
    from greenbench.sweep.schema import expand, load_sweep

    shutil.copy(PROJECT, workdir / "tinyproject.py")
    sweep = write_sweep(workdir, base="""\
name: late
model: {class_path: tinyproject.TinyGenerator, init_args: {latent: 4}}
data: {class_path: tinyproject.PatternData, init_args: {batch_size: 32}}
quality: {metric: kid, target: 1000000.0}
train: {epochs: 2}
eval: {num_samples: 50}
energy: {idle_seconds: 0, warmup_steps: 1}
generate: {num_images: 0}
""")
    (spec,) = expand(load_sweep(sweep))
    result = run_point(spec).record
    assert result["status"] == "ok", result["reason"]
    curve, quality = result["quality_curve"], result["quality"]
    assert [point["kid"] is None for point in curve] == [True, False]  # scored at the end
    assert quality["target_reached"] is True
    assert quality["target_reached_at"]["epoch"] == 2
    assert quality["energy_to_quality_j"] == curve[-1]["fit_j"]
