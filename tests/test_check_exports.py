"""`greenbench check`'s exports, checked against what github-action-benchmark and Bencher read:
the custom JSON list ({name, unit, value, range, extra}; one file per direction) and Bencher
Metric Format ({benchmark: {measure: {value, lower_value, upper_value}}}), on hand-written
records: with repeats and without, a passing and a failing rule, an energy and a quality rule."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from greenbench import results
from greenbench.check import exports
from greenbench.check.budget import FAIL, PASS, evaluate, load_budgets
from greenbench.check.exports import bigger_path_name, measure_slug, unit_of
from greenbench.errors import UserError
from greenbench.records import to_json
from tests.helpers import greenbench, record

FIT = {"32-true": (50.0, 52.0, 48.0), "bf16-mixed": (60.0, 63.0, 57.0)}
KID = {"32-true": (0.30, 0.32, 0.31), "bf16-mixed": (0.40, 0.43, 0.41)}
RULES = """\
- name: bf16-mixed fits on at most 90 % of 32-true's energy
  select: {precision: bf16-mixed}
  relative_to: {precision: 32-true}
  metric: energy_fit_j
  max_ratio: 0.9
- name: training energy within 80 J
  metric: energy_fit_j
  max: 80
  statistic: upper_ci
  tolerance: 0.05
- name: KID at most 0.35
  metric: kid
  max: 0.35
"""
# github-action-benchmark reads a range as (±|+-) then a number (src/extractRangeInfo.ts)
RANGE = re.compile(r"^± (\d[\d.]*(e[-+]\d+)?)$")
SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def with_fit(content: dict, fit_j: float) -> dict:
    """``content`` with a fit window of ``fit_j`` joules."""
    content["energy"]["windows"]["fit"] = {
        "total_j": fit_j, "duration_s": 11.0, "measured": False,
        "components": {"cpu": {"joules": fit_j, "source": "codecarbon_cpu_load_estimate"}}}
    return content


def runs(repeats: int = 3, shift: float = 0.0) -> list[dict]:
    """Two precisions, ``repeats`` runs each; ``shift`` moves every energy (another run of the
    same sweep measures other joules)."""
    return [with_fit(record(f"{precision}-{i}", precision=precision, seed=i,
                            kid=KID[precision][i]), FIT[precision][i] + shift)
            for precision in FIT for i in range(repeats)]


def decided(records: list[dict], rules: str, tmp_path: Path) -> tuple[list, object]:
    (tmp_path / "budgets.yaml").write_text(rules)
    frame = results.frame(records)
    verdicts = evaluate(load_budgets(tmp_path / "budgets.yaml", list(frame.columns)), frame)
    return exports.figures(verdicts, frame), frame


def check_benchmark_entries(items: list[dict]) -> None:
    """Each entry as github-action-benchmark's BenchmarkResult: name, unit and value required,
    range and extra optional strings; names unique."""
    names = [item["name"] for item in items]
    assert len(set(names)) == len(names)
    for item in items:
        assert set(item) <= {"name", "unit", "value", "range", "extra"}
        assert isinstance(item["name"], str) and item["name"]
        assert isinstance(item["unit"], str) and item["unit"]
        assert isinstance(item["value"], float) and math.isfinite(item["value"])
        assert isinstance(item["extra"], str)
        if "range" in item:
            assert RANGE.match(item["range"]), item["range"]


def check_bmf(content: dict) -> None:
    """As Bencher's BMF JSON schema: benchmark -> measure -> {value (required), lower_value,
    upper_value}; slugs at most 64 characters, names at most 1024; lower <= value <= upper."""
    for benchmark, measures in content.items():
        assert 0 < len(benchmark) <= 1024
        for slug, metric in measures.items():
            assert SLUG.match(slug) and len(slug) <= 64
            assert set(metric) <= {"value", "lower_value", "upper_value"}
            assert all(isinstance(v, float) and math.isfinite(v) for v in metric.values())
            if "lower_value" in metric or "upper_value" in metric:
                assert metric["lower_value"] <= metric["value"] <= metric["upper_value"]


def test_with_repeats_every_verdict_is_an_entry_with_its_interval(tmp_path: Path) -> None:
    entries, _ = decided(runs(), RULES, tmp_path)
    smaller, bigger = exports.benchmark_entries(entries)
    assert bigger == []  # energy and KID: lower is better
    check_benchmark_entries(smaller)
    by_name = {item["name"]: item for item in smaller}
    assert list(by_name) == [
        "bf16-mixed fits on at most 90 % of 32-true's energy",
        "training energy within 80 J [precision=32-true]",
        "training energy within 80 J [precision=bf16-mixed]",
        "KID at most 0.35 [precision=32-true]", "KID at most 0.35 [precision=bf16-mixed]"]
    ratio = by_name["bf16-mixed fits on at most 90 % of 32-true's energy"]
    assert ratio["value"] == pytest.approx(60 / 50) and ratio["unit"] == "ratio of J"
    assert ratio["extra"].startswith("FAIL: energy_fit_j ratio <= 0.9")
    assert "reference mean 50 J over 3 run(s)" in ratio["extra"]
    assert "quality: kid 0.4133" in ratio["extra"]  # the selection's runs: bf16-mixed
    energy = by_name["training energy within 80 J [precision=bf16-mixed]"]
    assert energy["unit"] == "J" and energy["value"] == pytest.approx(60 + 7.4527, abs=1e-3)
    assert energy["extra"].startswith("PASS: energy_fit_j upper_ci <= 84 (max 80 + tolerance 5%)")
    kid = by_name["KID at most 0.35 [precision=bf16-mixed]"]
    assert kid["unit"] == "kid" and kid["extra"].startswith("FAIL: kid mean <= 0.35")
    assert [e.verdict.result for e in entries] == [FAIL, PASS, PASS, PASS, FAIL]

    content = json.loads(exports.bmf(entries))
    check_bmf(content)
    assert list(content) == list(by_name)
    assert content["KID at most 0.35 [precision=32-true]"] == {"kid": {
        "value": 0.31, "lower_value": pytest.approx(0.28516, abs=1e-5),
        "upper_value": pytest.approx(0.33484, abs=1e-5)}}
    upper = content["training energy within 80 J [precision=32-true]"]["energy-fit-j"]
    assert upper["value"] == upper["upper_value"]  # the rule bounds the interval's upper end
    ratio_bmf = content["bf16-mixed fits on at most 90 % of 32-true's energy"]
    assert list(ratio_bmf) == ["energy-fit-j-ratio"]


def test_without_repeats_there_is_no_interval_and_none_is_invented(tmp_path: Path) -> None:
    entries, _ = decided(runs(repeats=1), RULES, tmp_path)
    smaller, _ = exports.benchmark_entries(entries)
    check_benchmark_entries(smaller)
    assert all("range" not in item for item in smaller)
    content = json.loads(exports.bmf(entries))
    check_bmf(content)
    assert all(set(metric) == {"value"} for measures in content.values()
               for metric in measures.values())
    assert all(not math.isfinite(entry.cv) for entry in entries)


def test_names_are_the_same_in_two_runs_of_the_same_sweep(tmp_path: Path) -> None:
    first, _ = decided(runs(), RULES, tmp_path)
    second, _ = decided(runs(shift=3.5), RULES, tmp_path)
    assert [e.value for e in first] != [e.value for e in second]
    assert ([item["name"] for item in exports.benchmark_entries(first)[0]]
            == [item["name"] for item in exports.benchmark_entries(second)[0]])
    assert list(json.loads(exports.bmf(first))) == list(json.loads(exports.bmf(second)))


def user_runs() -> list[dict]:
    """A user's classifier: val_acc, higher is better (quality.mode max), at two lr values."""
    out = []
    for lr, accuracies in ((0.01, (0.90, 0.92)), (0.1, (0.70, 0.74))):
        for i, accuracy in enumerate(accuracies):
            quality = {"metric": "val_acc", "mode": "max", "final": {"val_acc": accuracy}}
            out.append(with_fit(record(
                f"{lr}-{i}", model="mypkg.Net", seed=i, kid=None,
                config={"model_init_args": {"lr": lr},
                        "quality": {"metric": "val_acc", "mode": "max"}},
                quality=quality), 30.0 + i))
    return out


def test_a_higher_is_better_metric_goes_to_the_bigger_file(tmp_path: Path) -> None:
    rules = ("- {name: val_acc at least 0.8, metric: val_acc, min: 0.8}\n"
             "- {name: energy within 40 J, metric: energy_fit_j, max: 40}\n")
    entries, _ = decided(user_runs(), rules, tmp_path)
    smaller, bigger = exports.benchmark_entries(entries)
    check_benchmark_entries(smaller)
    check_benchmark_entries(bigger)
    assert [item["name"] for item in bigger] == [
        "val_acc at least 0.8 [model.init_args.lr=0.01]",
        "val_acc at least 0.8 [model.init_args.lr=0.1]"]
    assert bigger[1]["unit"] == "val_acc" and "FAIL" in bigger[1]["extra"]
    assert all(item["unit"] == "J" for item in smaller)
    assert "quality: val_acc 0.91" in smaller[0]["extra"]
    check_bmf(json.loads(exports.bmf(entries)))


def test_units_slugs_and_file_names() -> None:
    assert [unit_of(m) for m in ("energy_fit_j", "duration_fit_s", "idle_power_w", "kwh",
                                 "j_per_1k_samples", "images_per_s", "kid", "val_acc")] == [
        "J", "s", "W", "kWh", "J/1k samples", "images/s", "kid", "val_acc"]
    assert measure_slug("energy_fit_j", ratio=True) == "energy-fit-j-ratio"
    long = measure_slug("quality_" * 12 + "x", ratio=False)
    assert len(long) == 64 and SLUG.match(long)
    assert long != measure_slug("quality_" * 12 + "y", ratio=False)
    assert bigger_path_name("energy.json") == "energy-bigger.json"
    assert bigger_path_name("energy") == "energy-bigger"


def test_two_verdicts_with_one_name_are_refused(tmp_path: Path) -> None:
    rules = ("- {name: 'x [precision=32-true]', metric: kid, max: 1, "
             "select: {precision: 32-true}}\n- {name: x, metric: kid, max: 1}\n")
    with pytest.raises(UserError, match="both give a verdict named 'x \\[precision=32-true\\]'"):
        decided(runs(), rules, tmp_path)


# ------------------------------------------------------------------- through the command line


def write_runs(folder: Path, records: list[dict]) -> None:
    folder = folder / "runs" / "s" / "records"
    folder.mkdir(parents=True)
    for content in records:
        (folder / f"{content['run_id']}.json").write_text(to_json(content))


def test_the_flags_write_each_export_after_deciding(tmp_path: Path) -> None:
    write_runs(tmp_path, user_runs())
    (tmp_path / "budgets.yaml").write_text(
        "- {name: val_acc at least 0.8, metric: val_acc, min: 0.8}\n"
        "- {name: energy within 40 J, metric: energy_fit_j, max: 40}\n")
    (tmp_path / "out").mkdir()
    done = greenbench("check", "budgets.yaml", "runs/s", "--benchmark-json", "out/bench.json",
                      "--bmf", "out/bmf.json", "--comment", "out/comment.md", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr  # lr 0.1's val_acc is 0.72
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "bench-bigger.json", "bench.json", "bmf.json", "comment.md"]
    check_benchmark_entries(json.loads((tmp_path / "out" / "bench.json").read_text()))
    check_benchmark_entries(json.loads((tmp_path / "out" / "bench-bigger.json").read_text()))
    check_bmf(json.loads((tmp_path / "out" / "bmf.json").read_text()))
    assert "--bmf: wrote out/bmf.json" in done.stdout
    assert (tmp_path / "out" / "comment.md").read_text().startswith("<!-- greenbench-check -->")


@pytest.mark.parametrize("flag", ["--benchmark-json", "--bmf", "--comment"])
def test_an_output_in_a_missing_folder_is_one_line_and_nothing_is_written(
        tmp_path: Path, flag: str) -> None:
    write_runs(tmp_path, runs())
    (tmp_path / "budgets.yaml").write_text(RULES)
    (tmp_path / "out").mkdir()
    done = greenbench("check", "budgets.yaml", "runs/s", "--junit", "out/junit.xml",
                      "--comment", "out/comment.md", flag, "nowhere/file", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: {flag}: nowhere/file: the folder nowhere does not exist"]
    assert list((tmp_path / "out").iterdir()) == []


def test_one_file_for_two_outputs_is_refused(tmp_path: Path) -> None:
    write_runs(tmp_path, runs())
    (tmp_path / "budgets.yaml").write_text(RULES)
    done = greenbench("check", "budgets.yaml", "runs/s", "--junit", "x.xml", "--bmf", "x.xml",
                      cwd=tmp_path)
    assert done.returncode == 2 and not (tmp_path / "x.xml").exists()
    assert done.stderr.strip() == "error: --bmf: x.xml is also where --junit writes"


def test_a_bad_budget_writes_no_export(tmp_path: Path) -> None:
    write_runs(tmp_path, runs())
    (tmp_path / "budgets.yaml").write_text(RULES + "- {name: y, metric: kid, max: 1, "
                                           "select: {model: vae}}\n")
    done = greenbench("check", "budgets.yaml", "runs/s", "--benchmark-json", "b.json", "--bmf",
                      "bmf.json", "--comment", "c.md", "--junit", "j.xml", cwd=tmp_path)
    assert done.returncode == 2 and "select {model: vae} matches no ok run" in done.stderr
    assert not [p for p in tmp_path.iterdir() if p.is_file() and p.name != "budgets.yaml"]


def test_a_ratio_to_the_stored_baseline_has_the_baselines_interval(tmp_path: Path) -> None:
    (tmp_path / "budgets.yaml").write_text(
        "- {name: no more than the baseline, metric: energy_fit_j, max_ratio: 1.0}\n")
    frame = results.frame(runs(shift=20.0))
    baseline = results.frame(runs())
    rules = load_budgets(tmp_path / "budgets.yaml", list(frame.columns))
    entries = exports.figures(evaluate(rules, frame, baseline), frame)
    assert [entry.verdict.result for entry in entries] == [FAIL, FAIL]  # 70/50 and 80/60
    assert [entry.value for entry in entries] == pytest.approx([70 / 50, 80 / 60])
    assert [entry.reference_mean for entry in entries] == pytest.approx([50.0, 60.0])
    content = json.loads(exports.bmf(entries))
    check_bmf(content)
    assert all(set(metric) == {"value", "lower_value", "upper_value"}
               for measures in content.values() for metric in measures.values())
