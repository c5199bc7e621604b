"""`greenbench check` on result sets written by hand: pass, a real regression, noise, and
every way a budgets file can be wrong."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from greenbench.records import to_json
from tests.helpers import cli, greenbench, record, write_smallest_sweep

RULES = """\
rules:
  - name: bf16 trains on at most 80 % of 32-true's energy
    select: {precision: bf16-mixed}
    relative_to: {precision: 32-true}
    metric: energy_train_j
    max_ratio: 0.8
  - name: 32-true within 150 J
    select: {precision: 32-true}
    metric: energy_train_j
    max: 150
    statistic: upper_ci
"""


def results_dir(folder: Path, bf16_joules: list[float],
                fp32_joules: tuple[float, ...] = (100.0, 102.0, 98.0)) -> Path:
    records = folder / "runs" / "s" / "records"
    records.mkdir(parents=True)
    runs = [record(f"a{i}", seed=i, fit_j=j) for i, j in enumerate(fp32_joules)]
    runs += [record(f"b{i}", seed=i, precision="bf16-mixed", fit_j=j)
             for i, j in enumerate(bf16_joules)]
    for run in runs:
        (records / f"{run['run_id']}.json").write_text(to_json(run))
    return folder / "runs" / "s"


def check(folder: Path, rules: str = RULES, *args: str, env: dict | None = None):
    (folder / "budgets.yaml").write_text(rules)
    return cli("check", "budgets.yaml", "runs/s", *args, cwd=folder)


def test_a_passing_result_set_passes(tmp_path: Path) -> None:
    results_dir(tmp_path, [60.0, 61.0, 59.0])
    done = check(tmp_path, RULES, "--junit", "junit.xml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" PASS") >= 2 and "FAIL" not in done.stdout
    assert "0.6 (ratio)" in done.stdout
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "0"
    assert [case.get("name") for case in suite] == [
        "bf16 trains on at most 80 % of 32-true's energy", "32-true within 150 J"]


def test_the_console_command_exits_1_on_a_broken_budget(tmp_path: Path) -> None:
    results_dir(tmp_path, [120.0, 122.0, 118.0])
    (tmp_path / "budgets.yaml").write_text(RULES)
    done = greenbench("check", "budgets.yaml", "runs/s", cwd=tmp_path)
    assert done.returncode == 1 and "FAIL" in done.stdout, done.stdout + done.stderr


def test_an_injected_regression_fails_and_names_the_rule(tmp_path: Path) -> None:
    results_dir(tmp_path, [120.0, 122.0, 118.0])  # training energy doubled
    done = check(tmp_path, RULES, "--junit", "junit.xml")
    assert done.returncode == 1
    line = next(row for row in done.stdout.splitlines() if row.startswith("bf16 trains"))
    assert line.rstrip().endswith("FAIL")
    assert "significant (Welch, p = " in done.stdout
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert suite.get("failures") == "1"
    assert suite[0].find("failure") is not None and suite[1].find("failure") is None


def test_jitter_within_noise_is_inconclusive_not_fail(tmp_path: Path) -> None:
    results_dir(tmp_path, [60.0, 85.0, 110.0])  # mean 85 > 80, but the spread is wide
    done = check(tmp_path)
    assert done.returncode == 0, done.stdout
    assert "INCONCLUSIVE" in done.stdout and "FAIL" not in done.stdout
    assert "within noise" in done.stdout
    assert check(tmp_path, RULES, "--strict").returncode == 1


def test_one_run_a_side_lets_the_bound_decide_and_says_so(tmp_path: Path) -> None:
    results_dir(tmp_path, [90.0], fp32_joules=(100.0,))
    done = check(tmp_path)
    assert done.returncode == 1
    assert "no significance test possible" in done.stdout
    assert "one run, so no interval" in done.stdout  # upper_ci with a single run


def test_exact_metrics_fail_on_the_bound_alone(tmp_path: Path) -> None:
    folder = results_dir(tmp_path, [60.0, 61.0])
    for path in (folder / "records").iterdir():
        run = json.loads(path.read_text())
        run["flops_per_step"] = 200 if run["config"]["precision"] == "bf16-mixed" else 100
        path.write_text(to_json(run))
    rules = ("- name: bf16 FLOPs\n  select: {precision: bf16-mixed}\n"
             "  relative_to: {precision: 32-true}\n  metric: flops_per_step\n  max_ratio: 1.0\n")
    done = check(tmp_path, rules)
    assert done.returncode == 1
    assert "no significance test possible" in done.stdout


def test_baseline_results_file_for_ratio_rules(tmp_path: Path) -> None:
    results_dir(tmp_path, [60.0, 61.0, 59.0])
    assert cli("report", "runs/s", "--out", "old", cwd=tmp_path).returncode == 0
    rules = ("- name: no more than 10 % above the stored baseline\n"
             "  select: {precision: bf16-mixed}\n  metric: energy_train_j\n"
             "  max_ratio: 1.0\n  tolerance: 0.1\n")
    done = check(tmp_path, rules, "--baseline", "old/results.csv")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the same selection in the --baseline results" in done.stdout
    missing = check(tmp_path, rules)
    assert missing.returncode == 2
    assert "needs relative_to, or a --baseline results file" in missing.stderr


def test_energy_rules_over_runs_that_shared_a_node_warn(tmp_path: Path) -> None:
    records = results_dir(tmp_path, [60.0, 61.0, 59.0]) / "records"
    shared = json.loads((records / "b0.json").read_text())
    shared.update(executor="ray", node_concurrency=2)
    (records / "b0.json").write_text(to_json(shared))
    flops_rule = "\n".join([
        "  - name: FLOPs only", "    select: {precision: bf16-mixed}",
        "    metric: flops_per_step", "    max: 1e12"])
    for run in records.glob("*.json"):  # every run needs a FLOPs value for the extra rule
        content = json.loads(run.read_text())
        content["flops_per_step"] = 1000
        run.write_text(to_json(content))
    done = check(tmp_path, RULES + flops_rule + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, done.stdout  # the ratio rule selects b0; the others do not
    assert "bf16 trains" in warnings[0] and "1 of its 6 runs shared a node" in warnings[0]


def test_job_summary_and_calibration_warning(tmp_path: Path, monkeypatch) -> None:
    results_dir(tmp_path, [60.0, 61.0, 59.0])
    (tmp_path / "calibration.json").write_text(json.dumps(
        {"coefficient_of_variation": {"energy_train_j": 0.2}}))
    summary = tmp_path / "summary.md"
    summary.write_text("earlier steps\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    done = check(tmp_path)
    assert done.returncode == 0
    warning = next(line for line in done.stdout.splitlines() if line.startswith("warning:"))
    assert "bf16 trains on at most 80 % of 32-true's energy" in warning
    assert "tolerance 0.0% is below twice the run-to-run variation of energy_train_j" in warning
    text = summary.read_text()
    assert text.startswith("earlier steps\n### greenbench check: budgets.yaml on s")
    assert "| 32-true within 150 J | energy_train_j |" in text


BAD = {
    "empty file": ("", "the file is empty"),
    "no rules": ("rules: []\n", "rules: [] is empty"),
    "two bounds": ("- name: x\n  metric: kid\n  max: 1\n  min: 0\n",
                   "give exactly one of max, min, max_ratio, min_ratio"),
    "no bound": ("- name: x\n  metric: kid\n", "give exactly one of"),
    "unknown key": ("- name: x\n  metric: kid\n  max: 1\n  tolerence: 0.1\n",
                    "rules[0].tolerence: unknown key; did you mean 'tolerance'?"),
    "unknown metric": ("- name: x\n  metric: energy_trian_j\n  max: 1\n",
                       "rules[0].metric: 'energy_trian_j' is not a results column; did you "
                       "mean 'energy_train_j'?"),
    "unknown select key": ("- name: x\n  select: {precison: bf16-mixed}\n  metric: kid\n"
                           "  max: 1\n", "'precison' is not a config field to select on; did "
                           "you mean 'precision'?"),
    "relative_to with an absolute bound": (
        "- name: x\n  relative_to: {width: 1.0}\n  metric: kid\n  max: 1\n",
        "relative_to goes with max_ratio or min_ratio"),
    "bad statistic": ("- name: x\n  metric: kid\n  max: 1\n  statistic: median\n",
                      "rules[0].statistic: 'median' is not one of mean, upper_ci, lower_ci"),
    "negative tolerance": ("- name: x\n  metric: kid\n  max: 1\n  tolerance: -0.1\n",
                           "rules[0].tolerance: -0.1 should be greater than or equal to 0"),
    "same name twice": ("- {name: x, metric: kid, max: 1}\n- {name: x, metric: kid, max: 2}\n",
                        "rule name 'x' appears twice"),
    "yaml syntax": ("- name: [x\n", "invalid YAML"),
    "empty selection": ("- name: vae energy\n  select: {model: vae}\n  metric: energy_train_j\n"
                        "  max: 1\n", "rule 'vae energy': select {model: vae} matches no ok run"),
}


@pytest.mark.parametrize("content, expected", BAD.values(), ids=BAD.keys())
def test_bad_budgets_exit_2_with_one_line(tmp_path: Path, content: str, expected: str) -> None:
    results_dir(tmp_path, [60.0, 61.0, 59.0])
    done = check(tmp_path, content, "--junit", "junit.xml")
    assert done.returncode == 2, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "junit.xml").exists()


def test_calibrate_measures_the_spread_of_a_real_sweep(tmp_path: Path) -> None:
    write_smallest_sweep(tmp_path)
    done = cli("calibrate", "sweep.yaml", "--repeats", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    content = json.loads((tmp_path / "calibration.json").read_text())
    spread = content["coefficient_of_variation"]
    assert content["repeats"] == 2 and spread["flops_per_step"] == 0.0  # exact
    assert spread["energy_fit_j"] >= 0 and spread["energy_train_j"] >= 0 and "kid" in spread
    assert len(list((tmp_path / "runs" / "tiny" / "records").iterdir())) == 2
    assert cli("calibrate", "sweep.yaml", "--repeats", "1", cwd=tmp_path).returncode == 2


def test_the_committed_budgets_file_is_valid() -> None:
    from greenbench import results
    from greenbench.check.budget import load_budgets

    root = Path(__file__).resolve().parent.parent
    columns = list(results.frame([record("a", flops=1)]).columns)
    rules = load_budgets(root / "sweeps" / "budgets.yaml", columns)
    assert len(rules) >= 5 and any(rule.is_ratio for rule in rules)
