"""The readers (results table, report, check) on records of a user's own LightningModule: a
class path for ``model``, init args as the grid set them, and a logged quality metric with its
direction (``val_acc``, higher is better), alone and beside the reference models' records.
Records are written by hand, shaped like the point process writes them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from greenbench import results
from greenbench.check.budget import FAIL, PASS, evaluate, quality_warnings
from greenbench.check.rules import load_budgets
from greenbench.cli import main
from greenbench.errors import UserError
from greenbench.report import builder, tables
from tests.helpers import record

NET = "mypkg.models.MyNet"
DATA = "mypkg.data.MyDataModule"
LR = "model.init_args.lr"


def user_run(run_id: str, lr: float, precision: str, val_acc: float | str, fit_j: float,
             seed: int = 0, mode: str = "max", metric: str = "val_acc") -> dict:
    """A run of ``NET`` on ``DATA``: init args hidden (fixed), lr and act (text), one data init
    arg; quality ``metric`` with ``mode``; no KID (the module does not sample)."""
    content = record(
        run_id, model=NET, precision=precision, seed=seed, fit_j=fit_j - 10.0, kid=None,
        config={"dataset": DATA, "image_size": None, "latent_dim": None, "lr": None,
                "batch_size": None, "model_init_args": {"hidden": 64, "lr": lr, "act": "relu"},
                "data_init_args": {"batch_size": 32}, "width_arg": "hidden",
                "quality": {"metric": metric, "mode": mode, "target": 0.85}},
        quality={"metric": metric, "mode": mode, "energy_to_quality_j": fit_j / 2,
                 "final": {"epoch": 3, metric: val_acc},
                 "best": {"epoch": 2, metric: val_acc if isinstance(val_acc, str)
                          else val_acc + 0.01}},
        curve=[{"epoch": epoch, "step": 10 * epoch, "fit_j": fit_j * epoch / 3,
                "kid": None, metric: 0.3 * epoch} for epoch in (1, 2, 3)],
    )
    return with_fit(content, fit_j)


def with_fit(content: dict, fit_j: float) -> dict:
    """``content`` with a fit window of ``fit_j`` joules (its training energy)."""
    content["energy"]["windows"]["fit"] = {
        "total_j": fit_j, "net_j": None, "duration_s": 11.0, "measured": False,
        "components": {"cpu": {"joules": fit_j, "source": "codecarbon_cpu_load_estimate"}}}
    return content


# Two lr values x two precisions. Highest val_acc: lr 0.01 at 32-true; least energy: lr 0.1 at
# bf16-mixed, whose val_acc beats both runs that cost more but less than lr 0.01 at 32-true.
GRID = {  # run_id: lr, precision, val_acc, training joules
    "a": (0.01, "32-true", 0.95, 100.0),
    "b": (0.01, "bf16-mixed", 0.80, 70.0),
    "c": (0.1, "32-true", 0.70, 90.0),
    "d": (0.1, "bf16-mixed", 0.90, 60.0),
}
# Pareto-optimal with higher val_acc better: a (best) and d (cheapest, and better than b, c).
# Were lower better, b and c would be optimal and a would not: the direction decides.
PARETO_MAX = {"a": True, "b": False, "c": False, "d": True}
PARETO_MIN = {"a": False, "b": True, "c": True, "d": True}


def grid(mode: str = "max", metric: str = "val_acc") -> list[dict]:
    return [user_run(run_id, lr, precision, acc, joules, mode=mode, metric=metric)
            for run_id, (lr, precision, acc, joules) in GRID.items()]


def reference_runs() -> list[dict]:
    """The GAN at two precisions, two seeds each, as older records hold it (no quality metric
    named: KID, lower is better)."""
    return [with_fit(record(f"g{i}", precision=precision, seed=seed, kid=kid), joules)
            for i, (precision, seed, kid, joules) in enumerate([
                ("32-true", 0, 0.50, 100.0), ("32-true", 1, 0.52, 104.0),
                ("bf16-mixed", 0, 0.55, 60.0), ("bf16-mixed", 1, 0.57, 62.0)])]


def write_records(folder: Path, records: list[dict]) -> Path:
    (folder / "records").mkdir(parents=True, exist_ok=True)
    for content in records:
        (folder / "records" / f"{content['run_id']}.json").write_text(json.dumps(content))
    return folder


def md_table(markdown: str, heading: str) -> pd.DataFrame:
    """A table of the report's Markdown under ``## heading``, its cells unescaped."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    cells = [[cell.strip().replace("\\", "") for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
             for line in lines]
    return pd.DataFrame(cells[2:], columns=cells[0])


def pareto_of(table: pd.DataFrame) -> dict[str, bool]:
    """run id (by its lr and precision) -> its Pareto mark in a quality table."""
    marks = {}
    for run_id, (lr, precision, _, _) in GRID.items():
        row = table[(table[LR] == f"{lr:g}") & table["configuration"].str.contains(
            f" {precision} ")]
        assert len(row) == 1, (run_id, table)
        marks[run_id] = {"yes": True, "no": False}[row["Pareto"].iloc[0]]
    return marks


# ---------------------------------------------------------------------------------------------
# The results table


def test_init_args_and_the_quality_metric_are_columns_of_their_own() -> None:
    problems: list[str] = []
    frame = results.frame([*grid(), *reference_runs()], problems).set_index("run_id")

    assert problems == []
    assert frame.loc["a", "model"] == NET and frame.loc["a", "dataset"] == DATA
    assert frame.loc[["a", "b", "c", "d"], LR].tolist() == [0.01, 0.01, 0.1, 0.1]
    assert pd.api.types.is_numeric_dtype(frame[LR])  # numbers stay numbers
    assert frame.loc["a", "model.init_args.act"] == "relu"  # and text stays text
    assert frame.loc["a", "data.init_args.batch_size"] == 32
    assert frame.loc["a", "width_arg"] == "hidden"
    assert frame.loc["a", "quality_metric"] == "val_acc" and frame.loc["a", "quality_mode"] == "max"
    assert frame.loc["a", "quality_target"] == 0.85
    assert frame.loc["d", "val_acc"] == 0.90 and frame.loc["d", "best_val_acc"] == 0.91
    # a record that names no quality metric is the reference models': KID, lower is better
    assert frame.loc["g0", "quality_metric"] == "kid" and frame.loc["g0", "quality_mode"] == "min"
    assert math.isnan(frame.loc["g0", "val_acc"]) and math.isnan(frame.loc["g0", LR])

    keys = results.group_keys(frame)
    assert {LR, "model.init_args.hidden", "model.init_args.act", "data.init_args.batch_size",
            "width_arg"} <= set(keys)
    # runs whose other config fields are null (latent_dim, lr, image_size) are not dropped
    summary = tables.summarise(frame.reset_index()).set_index("label")
    assert len(summary) == 4 + 2 and summary["n"].sum() == 8
    mine = summary[summary["model"] == NET]
    assert sorted(mine["val_acc_mean"]) == [0.70, 0.80, 0.90, 0.95]
    assert set(mine["quality_metric"]) == {"val_acc"}
    assert all(label.endswith((" lr=0.01", " lr=0.1")) for label in mine.index)


def test_the_curves_carry_the_metric_under_its_own_name() -> None:
    curves = results.load_curves([*grid(), *reference_runs()])
    assert "val_acc" in curves
    run = curves[curves["run_id"] == "a"].sort_values("epoch")
    assert run["val_acc"].tolist() == pytest.approx([0.3, 0.6, 0.9])
    assert run["fit_j"].tolist() == pytest.approx([100 / 3, 200 / 3, 100.0])


def test_a_metric_named_like_another_column_is_renamed_once_and_scores_are_repaired() -> None:
    runs = grid(metric="batches")  # "batches" is already the count of training batches
    runs[0]["quality"]["final"]["batches"] = "0.95"  # a score stored as text
    problems: list[str] = []
    frame = results.frame(runs, problems).set_index("run_id")

    assert frame.loc["a", "quality_batches"] == 0.95 and frame.loc["d", "quality_batches"] == 0.9
    assert frame.loc["d", "best_quality_batches"] == 0.91
    assert frame["batches"].isna().all()  # the training count is left alone
    renamed = [line for line in problems if line.startswith("quality.metric:")]
    assert renamed == ["quality.metric: 4 runs (a, b, c and 1 more) name the metric 'batches', "
                       "which is already a results column; its values are in quality_batches "
                       "and best_quality_batches."]
    assert any(line.startswith("quality_batches: 1 run (a) stored it as text") for line in problems)
    curves = results.load_curves(runs)
    assert "quality_batches" in curves and curves["quality_batches"].notna().all()


# ---------------------------------------------------------------------------------------------
# The report


def test_the_report_shows_init_args_the_metric_and_marks_pareto_in_its_direction(
        tmp_path: Path) -> None:
    folder = write_records(tmp_path / "runs" / "s", grid())
    written = builder.build([folder], tmp_path / "out")

    assert {path.name for path in written} >= {"report.md", "quality_vs_energy.png",
                                                "quality_curves.png", "results.parquet"}
    markdown = (tmp_path / "out" / "report.md").read_text()
    quality = md_table(markdown, "Quality")
    energy = md_table(markdown, "Energy and cost")
    assert LR in quality and "val_acc" in quality and LR in energy
    assert "model.init_args.hidden" not in quality  # the same in every run: not shown
    assert sorted(quality["val_acc"]) == ["0.7 (one run)", "0.8 (one run)", "0.9 (one run)",
                                          "0.95 (one run)"]
    assert pareto_of(quality) == PARETO_MAX

    savings = md_table(markdown, "Savings against the baseline")
    row = savings[savings["configuration"].str.contains("bf16-mixed")
                  & savings["configuration"].str.endswith("lr=0.1")]
    assert row["val_acc ratio"].tolist() == ["1.29"]  # 0.90 / 0.70, against lr 0.1 at 32-true
    notes = markdown.split("## Notes", 1)[1]
    assert f"{NET} on {DATA}: quality is val_acc (higher is better; mode max), not KID" in (
        notes.replace("\\", ""))
    results_table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert {LR, "val_acc", "best_val_acc", "quality_metric"} <= set(results_table.columns)


def test_the_same_runs_with_lower_better_are_marked_the_other_way(tmp_path: Path) -> None:
    folder = write_records(tmp_path / "runs" / "s", grid(mode="min"))
    builder.build([folder], tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert pareto_of(md_table(markdown, "Quality")) == PARETO_MIN
    assert "(lower is better; mode min)" in markdown.replace("\\", "")


def test_a_folder_of_reference_and_user_records_reports_both(tmp_path: Path) -> None:
    folder = write_records(tmp_path / "runs" / "s", [*reference_runs(), *grid()])
    builder.build([folder], tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()

    quality = md_table(markdown, "Quality")
    gan = quality[quality["configuration"].str.startswith("gan ")]
    mine = quality[quality["configuration"].str.startswith(NET)]
    assert len(gan) == 2 and len(mine) == 4
    assert gan["KID"].str.startswith(("0.51 ±", "0.56 ±")).all() and (gan["val_acc"] == "-").all()
    assert (mine["KID"] == "-").all() and (mine["val_acc"] != "-").all()
    assert (gan[LR] == "-").all()
    # each model's Pareto marks by its own metric: bf16 costs less at a worse KID, so both are
    assert gan["Pareto"].tolist() == ["yes", "yes"]
    assert pareto_of(quality) == PARETO_MAX

    savings = md_table(markdown, "Savings against the baseline")
    gan_bf16 = savings[savings["configuration"].str.startswith("gan ")
                       & savings["configuration"].str.contains("bf16")]
    assert gan_bf16["KID ratio"].iloc[0].startswith("1.1")  # 0.56 / 0.51
    assert gan_bf16["val_acc ratio"].iloc[0] == "-"
    notes = markdown.split("## Notes", 1)[1].replace("\\", "")
    assert notes.count("quality is ") == 1 and f"{NET} on {DATA}: quality is val_acc" in notes
    assert "Quality (KID, or a model's own: val_acc) against training energy" in (
        markdown.replace("\\", ""))


# ---------------------------------------------------------------------------------------------
# check

SELECT_AND_BOUND = """\
- name: lr 0.01 reaches val_acc 0.9
  select: {model: mypkg.models.MyNet, "model.init_args.lr": 0.01}
  metric: val_acc
  min: 0.9
- name: lr 0.1 keeps 90 % of lr 0.01's val_acc
  select: {"model.init_args.lr": 0.1}
  relative_to: {"model.init_args.lr": 0.01}
  metric: val_acc
  min_ratio: 0.9
"""


def check(tmp_path: Path, rules: str, records: list[dict], capsys) -> tuple[int, str, str]:
    folder = write_records(tmp_path / "runs" / "s", records)
    (tmp_path / "budgets.yaml").write_text(rules)
    code = main(["check", str(tmp_path / "budgets.yaml"), str(folder)])
    out, err = capsys.readouterr()
    return code, out, err


def verdict_line(out: str, label: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(label + " "))


def test_check_selects_on_init_args_and_bounds_the_quality_metric(tmp_path: Path,
                                                                  capsys) -> None:
    code, out, err = check(tmp_path, SELECT_AND_BOUND, [*reference_runs(), *grid()], capsys)

    assert code == 1, out + err  # one configuration of each rule is below its bound
    reach = "lr 0.01 reaches val_acc 0.9"
    assert verdict_line(out, f"{reach} [precision=32-true]").rstrip().endswith(PASS)
    assert verdict_line(out, f"{reach} [precision=bf16-mixed]").rstrip().endswith(FAIL)
    keeps = "lr 0.1 keeps 90 % of lr 0.01's val_acc"
    fp32 = verdict_line(out, f"{keeps} [precision=32-true]")  # 0.70 / 0.95
    assert "0.7368 (ratio)" in fp32 and fp32.rstrip().endswith(FAIL)
    bf16 = verdict_line(out, f"{keeps} [precision=bf16-mixed]")  # 0.90 / 0.80
    assert "1.125 (ratio)" in bf16 and bf16.rstrip().endswith(PASS)
    assert "higher is better for val_acc (quality_mode max)" in out
    assert "warning:" not in out


def test_a_ratio_that_only_holds_back_improvement_is_warned_about(tmp_path: Path,
                                                                   capsys) -> None:
    rules = SELECT_AND_BOUND.replace("min_ratio: 0.9", "max_ratio: 1.1")
    code, out, _ = check(tmp_path, rules, grid(), capsys)
    assert code == 1  # lr 0.1 at bf16-mixed: 1.125 > 1.1
    assert ("warning: rule \"lr 0.1 keeps 90 % of lr 0.01's val_acc\": max_ratio bounds how far "
            "val_acc may rise above its reference, but higher is better for val_acc "
            "(quality_mode max)") in out
    frame = results.frame(grid(mode="min"))  # where lower is better, a max_ratio is right
    path = tmp_path / "budgets.yaml"
    warned = quality_warnings(load_budgets(path, list(frame.columns)), frame)
    assert not any("max_ratio bounds" in line for line in warned)


def test_an_absolute_bound_against_the_metric_s_direction_is_warned_about(
        tmp_path: Path, capsys) -> None:
    rules = SELECT_AND_BOUND.replace("  min: 0.9", "  max: 0.99")
    _, out, _ = check(tmp_path, rules, grid(), capsys)
    assert ("warning: rule 'lr 0.01 reaches val_acc 0.9': max puts a ceiling on val_acc, but "
            "higher is better for val_acc (quality_mode max): the bound runs against the "
            "metric's direction and holds back improvement; a limit on getting worse is min"
            ) in out
    frame = results.frame(grid(mode="min"))  # where lower is better, a max is right
    path = tmp_path / "budgets.yaml"
    warned = quality_warnings(load_budgets(path, list(frame.columns)), frame)
    assert not any("max puts a ceiling" in line for line in warned)


@pytest.mark.parametrize("select, expected", [
    ('{"model.init_args.momentum": 0.9}',
     "budgets.yaml: rules[0].select.model.init_args.momentum: not a column of these records "
     "(their init args: model.init_args.act, model.init_args.hidden, model.init_args.lr, "
     "data.init_args.batch_size)"),
    ('{"model.init_args.Lr": 0.01}', "rules[0].select.model.init_args.Lr: not a column of "
     "these records; did you mean 'model.init_args.lr'?"),
    ('{"model.init_arg.lr": 0.01}', "rules[0].select: 'model.init_arg.lr' is not a config field "
     "to select on; an init arg is selected as model.init_args.<name> or data.init_args.<name>"),
    ('{"model.init_args.lr": [0.01]}', "rules[0].select: 'model.init_args.lr': [0.01] should be "
     "text, a number or true/false"),
    ('{"model.init_args.lr": .nan}', "'model.init_args.lr': nan should be a finite number"),
])
def test_a_selection_on_an_init_arg_that_is_not_there_is_one_line(
        tmp_path: Path, capsys, select: str, expected: str) -> None:
    rules = f"- name: x\n  select: {select}\n  metric: val_acc\n  min: 0.5\n"
    code, out, err = check(tmp_path, rules, grid(), capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1


def test_init_arg_selections_match_text_numbers_and_flags_by_kind(tmp_path: Path) -> None:
    runs = grid()
    for content in runs:
        content["config"]["model_init_args"]["use_bn"] = content["run_id"] in ("a", "c")
    frame = results.frame(runs)
    path = tmp_path / "budgets.yaml"
    path.write_text('- {name: bn, select: {"model.init_args.use_bn": true}, metric: val_acc, '
                    'max: 1}\n'
                    '- {name: relu, select: {"model.init_args.act": relu}, metric: val_acc, '
                    'max: 1}\n'
                    '- {name: text, select: {"model.init_args.lr": "0.01"}, metric: val_acc, '
                    'max: 1}\n')
    bn, relu, text = load_budgets(path, list(frame.columns), fields=list(frame.columns))

    assert sorted(v.value for v in evaluate([bn], frame)) == [0.70, 0.95]  # a and c only
    assert sum(v.n for v in evaluate([relu], frame)) == 4
    with pytest.raises(UserError, match=r"select \{model.init_args.lr: 0.01\} matches no ok run"):
        evaluate([text], frame)  # the text "0.01" is not the number 0.01
