"""`greenbench check` on the inputs that used to crash it or were read wrong: numbers that are
not finite numbers, a reference mean of 0, text fields selected by a number, a baseline without
a needed column, outputs into a folder that does not exist, control characters, and rules whose
selection spans several configurations (one verdict each, never one pooled sample)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from greenbench import results
from greenbench.check.budget import FAIL, INCONCLUSIVE, PASS, evaluate, load_budgets
from greenbench.records import to_json
from tests.helpers import cli, record

ROOT = Path(__file__).resolve().parent.parent


def write_runs(folder: Path, runs: list[dict], name: str = "s") -> Path:
    records = folder / "runs" / name / "records"
    records.mkdir(parents=True)
    for run in runs:
        (records / f"{run['run_id']}.json").write_text(to_json(run))
    return records.parent


def runs_of(prefix: str, joules: list[float], **config) -> list[dict]:
    return [record(f"{prefix}{i}", seed=i, fit_j=j, **config) for i, j in enumerate(joules)]


def check(folder: Path, rules: str, *args: str):
    (folder / "budgets.yaml").write_text(rules)
    return cli("check", "budgets.yaml", *args, cwd=folder)


def assert_bad_input(done, expected: str, folder: Path) -> None:
    """Exit 2, one line on stderr holding ``expected``, no traceback, nothing printed or
    written."""
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not list(folder.rglob("junit.xml")) and not list(folder.rglob("summary.md"))


@pytest.fixture
def two_precisions(tmp_path: Path) -> Path:
    """Three runs per configuration: widths 1.0 and 0.5 at 32-true and at bf16-mixed."""
    write_runs(tmp_path, [
        *runs_of("a", [100.0, 101.0, 99.0]),
        *runs_of("b", [50.0, 50.5, 49.5], width=0.5),
        *runs_of("c", [10.0, 10.1, 9.9], precision="bf16-mixed"),
        *runs_of("d", [68.0, 68.5, 67.5], precision="bf16-mixed", width=0.5),
    ])
    return tmp_path


HALF_WIDTH = """\
- name: width 0.5 at most 80 % of width 1
  select: {model: gan, width: 0.5}
  relative_to: {model: gan, width: 1.0}
  metric: energy_train_j
  max_ratio: 0.8
"""

# ------------------------------------------------------------------- numbers are numbers

NOT_NUMBERS = {
    "nan bound": ("max: .nan", "rules[0].max: nan should be a finite number"),
    "infinite bound": ("max: .inf", "rules[0].max: inf should be a finite number"),
    "minus infinity": ("min: -.inf", "rules[0].min: -inf should be a finite number"),
    "boolean bound": ("max: true", "rules[0].max: expected a number, got true"),
    "text bound": ("max: '150'", "rules[0].max: expected a number, got the text '150'"),
    "nan ratio": ("max_ratio: .nan", "rules[0].max_ratio: nan should be"),
    "infinite ratio": ("min_ratio: .inf", "rules[0].min_ratio: inf should be a finite number"),
    "boolean ratio": ("max_ratio: true", "rules[0].max_ratio: expected a number, got true"),
    "text ratio": ('max_ratio: "0.8"', "rules[0].max_ratio: expected a number, got the text"),
    "boolean tolerance": ("max: 150\n  tolerance: yes",
                          "rules[0].tolerance: expected a number, got true"),
    "text tolerance": ("max: 150\n  tolerance: '0.1'",
                       "rules[0].tolerance: expected a number, got the text '0.1'"),
    "nan tolerance": ("max: 150\n  tolerance: .nan", "rules[0].tolerance: nan should be"),
    "boolean width": ("max: 150\n  select: {width: true}",
                      "rules[0].select.width: expected a number, got true"),
    "text width": ("max: 150\n  select: {width: '1.0'}",
                   "rules[0].select.width: expected a number, got the text '1.0'"),
    "nan width": ("max_ratio: 1\n  relative_to: {width: .nan}",
                  "rules[0].relative_to.width: nan should be a finite number"),
    "number for a text field": ("max: 150\n  select: {model: 1}",
                                "rules[0].select.model: 1 should be text"),
}


@pytest.mark.parametrize("bound, expected", NOT_NUMBERS.values(), ids=NOT_NUMBERS.keys())
def test_bounds_tolerances_and_selections_are_finite_numbers(
        tmp_path: Path, bound: str, expected: str) -> None:
    write_runs(tmp_path, runs_of("a", [100.0, 101.0, 99.0]))
    rules = f"- name: x\n  metric: energy_train_j\n  {bound}\n"
    done = check(tmp_path, rules, "runs/s", "--junit", "junit.xml")
    assert_bad_input(done, f"budgets.yaml: {expected}", tmp_path)


def test_tolerance_widens_a_negative_bound_too(tmp_path: Path) -> None:
    # KID can be below 0; half of the bound as room on max: -0.01 is -0.005, not -0.015
    write_runs(tmp_path, [record(f"a{i}", seed=i, kid=-0.008) for i in range(2)])
    rules = "- {name: kid, metric: kid, max: -0.01, tolerance: 0.5}\n"
    done = check(tmp_path, rules, "runs/s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<= -0.005  " in done.stdout and "PASS" in done.stdout


# ------------------------------------------------------------------- no more tracebacks


def test_a_relative_to_reference_with_mean_0_is_one_line(tmp_path: Path) -> None:
    write_runs(tmp_path, [*runs_of("a", [0.0, 0.0]), *runs_of("b", [5.0, 6.0], width=0.5)])
    done = check(tmp_path, HALF_WIDTH, "runs/s", "--junit", "junit.xml")
    assert_bad_input(done, "rule 'width 0.5 at most 80 % of width 1': the reference mean of "
                     "energy_train_j is 0", tmp_path)
    assert "bound energy_train_j with max or min instead" in done.stderr


def baseline_csv(folder: Path, runs: list[dict], drop: str | None = None) -> Path:
    table = results.frame(runs)
    if drop:
        table = table.drop(columns=[drop])
    path = folder / "old.csv"
    table.to_csv(path, index=False)
    return path


BASELINE_RULE = """\
- name: no more than 10 % above the baseline
  select: {model: gan}
  metric: energy_train_j
  max_ratio: 1.0
  tolerance: 0.1
"""


def test_a_baseline_with_mean_0_is_one_line(tmp_path: Path) -> None:
    write_runs(tmp_path, runs_of("a", [100.0, 101.0]))
    baseline_csv(tmp_path, runs_of("a", [0.0, 0.0]))
    done = check(tmp_path, BASELINE_RULE, "runs/s", "--baseline", "old.csv")
    assert_bad_input(done, "the reference mean of energy_train_j is 0 (the same selection in "
                     "the --baseline results", tmp_path)


@pytest.mark.parametrize("column", ["energy_train_j", "model", "precision"])
def test_a_baseline_without_a_needed_column_names_it(tmp_path: Path, column: str) -> None:
    # the metric, a field the rule selects on, a configuration field it is matched by
    write_runs(tmp_path, runs_of("a", [100.0, 101.0]))
    baseline_csv(tmp_path, runs_of("a", [100.0, 101.0]), drop=column)
    done = check(tmp_path, BASELINE_RULE, "runs/s", "--baseline", "old.csv")
    assert_bad_input(done, f"--baseline: old.csv has no {column!r} column, which rule 'no more "
                     "than 10 % above the baseline' needs", tmp_path)


def test_text_fields_are_matched_as_text_and_numbers_by_value(tmp_path: Path) -> None:
    write_runs(tmp_path, runs_of("a", [100.0, 101.0]))
    rules = "- {name: x, metric: energy_train_j, max: 150, select: {model: gan, width: 1}}\n"
    done = check(tmp_path, rules, "runs/s")
    assert done.returncode == 0 and "PASS" in done.stdout, done.stdout + done.stderr
    done = check(tmp_path, rules.replace("gan", "'1'"), "runs/s")
    assert_bad_input(done, "rule 'x': select {model: 1, width: 1} matches no ok run", tmp_path)


PASSING = "- {name: x, metric: energy_train_j, max: 150}\n"


def test_junit_into_a_missing_folder_is_refused_before_anything_is_printed(
        tmp_path: Path) -> None:
    write_runs(tmp_path, runs_of("a", [100.0, 101.0]))
    done = check(tmp_path, PASSING, "runs/s", "--junit", "nowhere/junit.xml")
    assert_bad_input(done, "--junit: nowhere/junit.xml: the folder nowhere does not exist",
                     tmp_path)
    (tmp_path / "out").mkdir()
    done = check(tmp_path, PASSING, "runs/s", "--junit", "out")
    assert_bad_input(done, "--junit: out is a folder, not a file", tmp_path)


def test_a_step_summary_in_a_missing_folder_is_refused_and_nothing_is_written(
        tmp_path: Path, monkeypatch) -> None:
    write_runs(tmp_path, runs_of("a", [100.0, 101.0]))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "gone" / "summary.md"))
    failing = PASSING.replace("150", "50")  # even a broken budget is not half reported
    done = check(tmp_path, failing, "runs/s", "--junit", "junit.xml")
    assert_bad_input(done, f"$GITHUB_STEP_SUMMARY: {tmp_path / 'gone' / 'summary.md'}: the "
                     f"folder {tmp_path / 'gone'} does not exist", tmp_path)


@pytest.mark.parametrize("name", ["red \\e[31malert", "two\\nlines", "bell \\a", "tab\\tname",
                                  "reversed \\u202etext"])
def test_control_characters_in_a_rule_name_are_refused(tmp_path: Path, name: str) -> None:
    write_runs(tmp_path, runs_of("a", [100.0, 101.0]))
    rules = f'- name: "{name}"\n  metric: energy_train_j\n  max: 150\n'
    done = check(tmp_path, rules, "runs/s", "--junit", "junit.xml")
    assert_bad_input(done, "budgets.yaml: rules[0].name: contains the unprintable character U+",
                     tmp_path)
    assert "\x1b" not in done.stderr


def test_control_characters_from_a_record_are_escaped_in_every_output(
        tmp_path: Path, monkeypatch) -> None:
    # a hand-edited record: its config values reach the labels of per-configuration verdicts
    write_runs(tmp_path, [*runs_of("a", [100.0, 101.0]),
                          *runs_of("b", [90.0, 91.0], precision="x\x1b[2Jy")])
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    done = check(tmp_path, PASSING, "runs/s", "--junit", "junit.xml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\x1b" not in done.stdout and "x [precision=x\\x1b[2Jy]" in done.stdout
    assert "\x1b" not in (tmp_path / "summary.md").read_text()
    names = [case.get("name") for case in ET.parse(tmp_path / "junit.xml").getroot()]
    assert names == ["x [precision=32-true]", "x [precision=x\\x1b[2Jy]"]


def test_folders_without_a_readable_record_say_so(tmp_path: Path) -> None:
    records = tmp_path / "runs" / "s" / "records"
    records.mkdir(parents=True)
    (records / "broken.json").write_text("{not json")
    done = check(tmp_path, PASSING, "runs/s")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (
        "error: runs/s: no record here that this greenbench can read")


# ------------------------------------------------------------------- like with like


def test_a_selection_over_two_precisions_gets_a_verdict_for_each(two_precisions: Path,
                                                                 monkeypatch) -> None:
    summary = two_precisions / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    done = check(two_precisions, HALF_WIDTH, "runs/s", "--junit", "junit.xml")
    assert done.returncode == 1, done.stdout + done.stderr
    table = {line.split("  ")[0]: line for line in done.stdout.splitlines()
             if line.startswith("width 0.5")}
    assert set(table) == {"width 0.5 at most 80 % of width 1 [precision=32-true]",
                          "width 0.5 at most 80 % of width 1 [precision=bf16-mixed]"}
    assert "0.5 (ratio)" in table["width 0.5 at most 80 % of width 1 [precision=32-true]"]
    bf16 = table["width 0.5 at most 80 % of width 1 [precision=bf16-mixed]"]
    assert "6.8 (ratio)" in bf16 and bf16.rstrip().endswith("FAIL")  # against bf16's width 1
    assert INCONCLUSIVE not in done.stdout and "1 pass, 1 fail" in done.stdout
    suite = ET.parse(two_precisions / "junit.xml").getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    assert [(case.get("name"), case.find("failure") is not None) for case in suite] == [
        ("width 0.5 at most 80 % of width 1 [precision=32-true]", False),
        ("width 0.5 at most 80 % of width 1 [precision=bf16-mixed]", True)]
    assert summary.read_text().startswith("### greenbench check: budgets.yaml on s (12 records)")
    rows = [line for line in summary.read_text().splitlines()
            if line.startswith("| width 0.5")]
    assert len(rows) == 2 and rows[1].endswith("| **FAIL** |")
    assert "[precision=bf16-mixed]" in rows[1]


def test_the_baseline_is_matched_configuration_by_configuration(tmp_path: Path) -> None:
    write_runs(tmp_path, [*runs_of("a", [100.0, 102.0, 98.0]),
                          *runs_of("b", [120.0, 122.0, 118.0], precision="bf16-mixed")])
    baseline_csv(tmp_path, [*runs_of("a", [100.0, 102.0, 98.0]),
                            *runs_of("b", [60.0, 61.0, 59.0], precision="bf16-mixed")])
    done = check(tmp_path, BASELINE_RULE, "runs/s", "--baseline", "old.csv")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("no more")]
    assert len(lines) == 2
    assert "[precision=32-true]" in lines[0] and lines[0].rstrip().endswith("PASS")
    assert "[precision=bf16-mixed]" in lines[1] and "2 (ratio)" in lines[1]
    assert lines[1].rstrip().endswith("FAIL")


def test_a_reference_is_never_another_configurations(tmp_path: Path) -> None:
    # bf16-mixed has no width 1 run: its width 0.5 is not compared with 32-true's width 1
    write_runs(tmp_path, [*runs_of("a", [100.0, 101.0]), *runs_of("b", [50.0, 51.0], width=0.5),
                          *runs_of("c", [90.0, 91.0], precision="bf16-mixed", width=0.5)])
    done = check(tmp_path, HALF_WIDTH, "runs/s")
    assert_bad_input(done, "rule 'width 0.5 at most 80 % of width 1 [precision=bf16-mixed]': "
                     "relative_to {model: gan, width: 1} matches ok runs, but none with the "
                     "same precision=bf16-mixed as the selection", tmp_path)


def test_the_first_line_names_the_budgets_and_the_folder_it_read(two_precisions: Path) -> None:
    (two_precisions / "runs" / "s" / "records" / "f0.json").write_text(
        to_json(record("f0", status="failed", reason="boom")))
    done = check(two_precisions, HALF_WIDTH)  # no folder named: the latest sweep is read
    assert done.stdout.splitlines()[0] == (
        "greenbench check: budgets.yaml on runs/s (13 records, 12 ok)"), done.stdout
    (two_precisions / "runs" / "s" / "records" / "f0.json").unlink()
    done = check(two_precisions, HALF_WIDTH, "runs/s")
    assert done.stdout.splitlines()[0] == "greenbench check: budgets.yaml on runs/s (12 records)"


# ------------------------------------------------------------------- the committed budgets


def ci_results() -> list[dict]:
    """Records shaped like sweeps/ci.yaml's: the GAN at 2 precisions x 2 widths, 2 runs each,
    with the FLOPs the GAN has and energies and KIDs a CPU gives."""
    flops = {0.5: 785383424, 1.0: 3047161856}
    energy = {("32-true", 0.5): 20.0, ("32-true", 1.0): 50.0,
              ("bf16-mixed", 0.5): 25.0, ("bf16-mixed", 1.0): 40.0}
    kid = {0.5: 0.6, 1.0: 0.17}
    return [record(f"{precision}-{width}-{i}", precision=precision, width=width, seed=i,
                   fit_j=energy[precision, width] * (1 + i / 20), kid=kid[width],
                   flops=flops[width])
            for precision in ("32-true", "bf16-mixed") for width in (0.5, 1.0) for i in (0, 1)]


def test_every_committed_budget_selects_runs_of_the_ci_sweep_per_configuration() -> None:
    table = results.frame(ci_results())
    columns = list(table.columns)
    rules = load_budgets(ROOT / "sweeps" / "budgets.yaml", columns)
    verdicts = evaluate(rules, table)
    assert {v.result for v in verdicts} == {PASS}, [(v.label, v.value) for v in verdicts]
    for rule in rules:
        mine = [v for v in verdicts if v.rule is rule]
        assert all(v.n == 2 for v in mine), rule.name  # one configuration's runs, not pooled
        assert len({v.label for v in mine}) == len(mine)
        if rule.metric.startswith("energy_"):  # estimated energy: only ratios in one run
            assert rule.is_ratio and rule.relative_to is not None, rule.name
    assert len(verdicts) > len(rules)  # some rules hold at each of several configurations
    ci = (ROOT / "sweeps" / "ci.yaml").read_text()
    assert "repeats: 2" in ci and "precision: [32-true, bf16-mixed]" in ci
    assert "width: [0.5, 1.0]" in ci


def test_the_committed_budgets_flag_a_width_regression_in_one_precision() -> None:
    runs = ci_results()
    for run in runs:  # bf16-mixed's width 0.5 as costly as its width 1 (40 J)
        if run["config"]["precision"] == "bf16-mixed" and run["config"]["width"] == 0.5:
            for window in run["energy"]["windows"].values():
                window["total_j"] = 40.0 + int(run["run_id"][-1])
    table = results.frame(runs)
    verdicts = evaluate(load_budgets(ROOT / "sweeps" / "budgets.yaml", list(table.columns)),
                        table)
    width = {v.label: v for v in verdicts if v.rule.metric == "energy_fit_j"
             and v.rule.select.width == 0.5 and v.rule.relative_to.width == 1.0}
    assert len(width) == 2, list(width)
    (fp32,) = (v for label, v in width.items() if label.endswith("[precision=32-true]"))
    (bf16,) = (v for label, v in width.items() if label.endswith("[precision=bf16-mixed]"))
    assert fp32.result == PASS and fp32.value == pytest.approx(20.5 / 51.25)
    assert bf16.result in (FAIL, INCONCLUSIVE) and bf16.value == pytest.approx(40.5 / 41.0)
