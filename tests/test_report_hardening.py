"""`greenbench report` (and `check`) against damaged, hostile and odd record folders, written by
hand on disk and read through the real command line: every case ends in a whole report or in
one line and nothing written."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from greenbench.cli import main
from greenbench.report import plots
from tests.helpers import cli, record

FOLDER = Path("runs") / "s"


def write_records(root: Path, records: list[dict], folder: Path = FOLDER) -> Path:
    """Records as JSON files in ``root/folder/records/``; the sweep folder."""
    records_dir = root / folder / "records"
    records_dir.mkdir(parents=True, exist_ok=True)
    for content in records:
        (records_dir / f"{content['run_id']}.json").write_text(json.dumps(content))
    return root / folder


def two_configurations() -> list[dict]:
    return [record("a0", seed=0, fit_j=100.0, kid=0.5), record("a1", seed=1, fit_j=110.0),
            record("b0", width=0.5, fit_j=60.0, kid=0.7)]


def report_files(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def assert_one_line_error(done, expected: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert "Traceback" not in done.stderr


def hidden_leftovers(folder: Path) -> list[str]:
    return [path.name for path in folder.iterdir() if path.name.startswith(".")]


# ---------------------------------------------------------------------------------------------
# Where the report goes


def test_report_writes_into_the_sweep_folder_and_says_what_it_read(tmp_path: Path) -> None:
    write_records(tmp_path, two_configurations())

    done = cli("report", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "read 3 records from runs/s"
    out = tmp_path / "runs" / "s" / "report"
    assert {"report.md", "report.html", "results.csv", "results.parquet"} <= report_files(out)
    assert "runs/s/report/report.html" in lines[-1]
    assert not (tmp_path / "reports").exists()
    assert hidden_leftovers(tmp_path / "runs" / "s") == []


def test_a_report_is_replaced_whole_and_a_foreign_folder_never(tmp_path: Path) -> None:
    write_records(tmp_path, two_configurations())
    out = tmp_path / "runs" / "s" / "report"
    assert cli("report", cwd=tmp_path).returncode == 0
    (out / "old_plot.png").write_bytes(b"\x89PNG stale")  # from an earlier version, say

    assert cli("report", cwd=tmp_path).returncode == 0
    assert "old_plot.png" not in report_files(out)  # the new folder replaced the old one whole
    assert hidden_leftovers(out.parent) == []

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own file")
    done = cli("report", "--out", "mine", cwd=tmp_path)
    assert_one_line_error(done, "mine: holds 'notes.txt', which a report does not write")
    assert report_files(mine) == {"notes.txt"}
    assert hidden_leftovers(tmp_path) == []


def test_a_failing_plot_leaves_no_report_and_no_partial_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(tmp_path, two_configurations())
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 0
    out = tmp_path / "runs" / "s" / "report"
    before = {name: (out / name).read_bytes() for name in report_files(out)}
    capsys.readouterr()

    def broken(results: pd.DataFrame, out_dir: Path) -> Path:
        (Path(out_dir) / "energy_breakdown.png").write_bytes(b"")  # half-written, then fails
        raise ValueError("arange: cannot compute length")

    monkeypatch.setattr(plots, "energy_breakdown", broken)
    assert main(["report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the energy_breakdown plot cannot be drawn from these records "
                   "(ValueError: arange: cannot compute length); nothing written"]
    assert {name: (out / name).read_bytes() for name in report_files(out)} == before
    assert hidden_leftovers(out.parent) == []

    assert main(["report", "--out", "fresh"]) == 2
    assert not (tmp_path / "fresh").exists() and hidden_leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Values that used to crash the report


def test_an_absurd_energy_is_missing_with_a_note_and_the_plots_are_drawn(tmp_path: Path) -> None:
    runs = [record("a0", fit_j=60.0), record("b0", width=0.5, fit_j=60.0)]
    for window in ("train", "fit"):
        runs[0]["energy"]["windows"][window]["total_j"] = 1e308
        runs[0]["energy"]["windows"][window]["components"]["cpu"]["joules"] = 1e308
    write_records(tmp_path, runs)

    done = cli("report", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    out = tmp_path / "runs" / "s" / "report"
    results = pd.read_parquet(out / "results.parquet").set_index("run_id")
    assert math.isnan(results.loc["a0", "energy_train_j"])
    assert math.isnan(results.loc["a0", "energy_fit_j"])
    assert results.loc["a0", "energy_warmup_j"] == 6.0 and results.loc["b0", "energy_fit_j"] == 60.0
    markdown = (out / "report.md").read_text()
    assert ("energy\\_train\\_j: 1 run (a0) holds a value that is not plausible, e.g. 1e+308; "
            "treated as missing.") in markdown
    for png in out.glob("*.png"):
        assert png.stat().st_size > 0


@pytest.mark.parametrize("flops", [2**63, 2**64, 2**70])
def test_flops_beyond_64_bits_are_reported(tmp_path: Path, flops: int) -> None:
    runs = two_configurations()
    runs[0]["flops_per_step"] = flops
    runs[2]["flops_per_step"] = -1 if flops == 2**63 else 10  # -1: not plausible, missing
    write_records(tmp_path, runs)

    done = cli("report", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    out = tmp_path / "runs" / "s" / "report"
    results = pd.read_parquet(out / "results.parquet").set_index("run_id")
    assert results.loc["a0", "flops_per_step"] == pytest.approx(float(flops))
    markdown = (out / "report.md").read_text()
    assert f"| {flops * 1e-9:.4g} |" in markdown  # GFLOP per step (a1 has none)
    if flops == 2**63:
        assert math.isnan(results.loc["b0", "flops_per_step"])
        assert "flops\\_per\\_step: 1 run (b0) holds a value that is not plausible, e.g. -1" \
            in markdown


def test_numbers_stored_as_text_are_read_or_missing_and_noted(tmp_path: Path) -> None:
    runs = two_configurations()
    runs[0]["flops_per_step"] = "12"
    runs[1]["energy"]["windows"]["train"]["total_j"] = "lots"
    runs[2]["config"]["model"] = 7  # a text field holding a number stays text
    runs[2]["reason"] = {"why": "a dict"}
    write_records(tmp_path, runs)

    done = cli("report", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    out = tmp_path / "runs" / "s" / "report"
    results = pd.read_parquet(out / "results.parquet").set_index("run_id")
    assert results.loc["a0", "flops_per_step"] == 12.0
    assert math.isnan(results.loc["a1", "energy_train_j"])
    assert results.loc["b0", "model"] == "7" and results.loc["b0", "reason"] == '{"why": "a dict"}'
    markdown = (out / "report.md").read_text().replace("\\_", "_")
    assert "flops_per_step: 1 run (a0) stored it as text, e.g. '12'; read as a number." in markdown
    assert "energy_train_j: 1 run (a1) holds a value that is not a number" in markdown


# ---------------------------------------------------------------------------------------------
# Files that are not records, and runs read twice

STRAYS = {
    "list.json": [1, 2, 3], "null.json": None, "text.json": "a string", "dict.json": {"a": 1},
    "future.json": {**record("future"), "schema": 99},
    "no_status.json": {key: value for key, value in record("no_status").items()
                       if key != "status"},
}


def test_stray_files_are_skipped_with_a_warning_each_by_report_and_check(
    tmp_path: Path
) -> None:
    folder = write_records(tmp_path, two_configurations())
    for name, content in STRAYS.items():
        (folder / "records" / name).write_text(json.dumps(content))
    (folder / "records" / "broken.json").write_text("{not json")

    done = cli("report", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    warnings = done.stderr.strip().splitlines()
    assert len(warnings) == len(STRAYS) + 1
    for name in (*STRAYS, "broken.json"):
        [line] = [w for w in warnings if f"records/{name}:" in w]
        assert line.startswith("warning: ") and "skipped, not a record" in line
    assert done.stdout.splitlines()[0] == "read 3 records from runs/s"
    out = folder / "report"
    assert sorted(pd.read_csv(out / "results.csv")["run_id"]) == ["a0", "a1", "b0"]
    energy = (out / "report.md").read_text().split("## Energy and cost")[1].split("##")[0]
    assert len([line for line in energy.splitlines() if line.startswith("| gan")]) == 2

    (tmp_path / "budgets.yaml").write_text(
        "- name: within 1 kJ\n  select: {model: gan}\n  metric: energy_train_j\n  max: 1000\n")
    checked = cli("check", "budgets.yaml", "runs/s", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    check_warnings = [w for w in checked.stderr.splitlines() if "skipped, not a record" in w]
    assert len(check_warnings) == len(STRAYS) + 1


def test_a_folder_of_strays_only_is_a_user_error(tmp_path: Path) -> None:
    folder = tmp_path / FOLDER
    (folder / "records").mkdir(parents=True)
    (folder / "records" / "dict.json").write_text('{"a": 1}')

    done = cli("report", cwd=tmp_path)

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "error: runs/s: no record this greenbench reads")
    assert not (folder / "report").exists() and hidden_leftovers(folder) == []


def test_the_same_runs_in_two_sweep_folders_count_once(tmp_path: Path) -> None:
    write_records(tmp_path, two_configurations(), Path("runs") / "first")
    write_records(tmp_path, [*two_configurations()[:2], record("c0", width=0.25)],
                  Path("runs") / "second")

    done = cli("report", "runs/first", "runs/second", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "read 4 records from runs/first, runs/second"
    duplicates = [w for w in done.stderr.splitlines() if "counted once" in w]
    assert len(duplicates) == 2 and all(w.startswith("warning: runs/second: run a") and
                                        w.endswith("from runs/first") for w in duplicates)
    out = tmp_path / "runs" / "first" / "report"
    assert sorted(pd.read_parquet(out / "results.parquet")["run_id"]) == ["a0", "a1", "b0", "c0"]
    assert not (tmp_path / "runs" / "second" / "report").exists()


# ---------------------------------------------------------------------------------------------
# Text from records that must stay inert: formulas in the CSV, mentions and links in Markdown

FORMULAS = ["=HYPERLINK(\"http://x.example\",\"x\")", "+1+1", "-2+3", "@SUM(A1:A2)",
            "\tstarts with a tab", "\rstarts with a return"]


def test_formula_text_is_quoted_in_the_csv_and_numbers_are_not(tmp_path: Path) -> None:
    runs = [record(f"f{i}", seed=i, status="failed", reason=text)
            for i, text in enumerate(FORMULAS)]
    runs.append(record("ok", kid=-0.002))  # an unbiased KID below zero: still a number
    runs[-1]["config"]["lr"] = -0.5
    runs[-1]["node"] = "=cmd|' /C calc'!A0"
    write_records(tmp_path, runs)

    done = cli("report", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    out = tmp_path / "runs" / "s" / "report"
    with open(out / "results.csv", newline="", encoding="utf-8") as file:
        rows = {row["run_id"]: row for row in csv.DictReader(file)}
    for i, text in enumerate(FORMULAS):
        assert rows[f"f{i}"]["reason"] == "'" + text
    assert rows["ok"]["node"] == "'=cmd|' /C calc'!A0"
    assert rows["ok"]["kid"] == "-0.002" and rows["ok"]["lr"] == "-0.5"
    for row in rows.values():
        for value in row.values():
            assert not value.startswith(("=", "+", "@", "\t", "\r")), value
    raw = pd.read_parquet(out / "results.parquet").set_index("run_id")
    assert raw.loc["f0", "reason"] == FORMULAS[0] and raw.loc["ok", "kid"] == -0.002


def test_mentions_and_urls_from_records_are_inert_in_the_markdown(tmp_path: Path) -> None:
    runs = two_configurations()
    runs.append(record("x0", seed=5, status="failed",
                       reason="@maintainer see https://evil.example/p?a=1 or www.evil.example"))
    runs[0]["energy"]["warnings"] = ["ping @octocat"]
    write_records(tmp_path, runs)

    done = cli("report", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    markdown = (tmp_path / "runs" / "s" / "report" / "report.md").read_text()
    assert "@\u200bmaintainer see `https://evil.example/p?a=1` or `www.evil.example`" in markdown
    assert "1 run: ping @\u200boctocat" in markdown
    assert "@maintainer" not in markdown and "@octocat" not in markdown


def test_a_budget_rule_may_bound_training_energy(tmp_path: Path) -> None:
    runs = two_configurations()  # width 1: 100 J and 110 J of training energy
    write_records(tmp_path, runs)
    (tmp_path / "budgets.yaml").write_text(
        "- name: training within 120 J\n  select: {width: 1.0}\n  metric: energy_fit_j\n"
        "  max: 120\n"
        "- name: training within 100 J\n  select: {width: 1.0}\n  metric: energy_fit_j\n"
        "  max: 100\n")

    done = cli("check", "budgets.yaml", "runs/s", cwd=tmp_path)

    assert done.returncode == 1, done.stdout + done.stderr  # 105 J: the second rule breaks
    assert "PASS" in done.stdout and "FAIL" in done.stdout
