"""A real sweep of the reference models end to end (the command, its records and files, a
second run that skips every point), then `greenbench report` on it, and the report's errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from greenbench.records import SCHEMA
from tests.helpers import TINY_SWEEP, cli, greenbench, read_records, record, write_sweep

# Like the quickstart (both models, several precisions) on tiny budgets, with a curve, skipped
# points (16-mixed on a CPU) and a description that tries to run a script.
SWEEP = TINY_SWEEP.replace("name: tiny", (
    "name: tiny\ndescription: '<script>alert(1)</script> & friends'"
)).replace("eval: {num_samples: 50, importance_samples: 4}", (
    "eval: {num_samples: 50, importance_samples: 4, every_n_epochs: 1}"
)).replace("train: {steps: 4}", "train: {epochs: 2}")+ """\
data_fraction: 0.1
grid:
  model: [gan, vae]
  precision: [bf16-mixed, 16-mixed]
"""


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_sweep_then_report_writes_every_file(tmp_path: Path) -> None:
    # A fresh clone: the project's .gitignore, a sweep file, everything committed.
    git("init", "-q", cwd=tmp_path)
    shutil.copy(Path(__file__).resolve().parent.parent / ".gitignore", tmp_path / ".gitignore")
    write_sweep(tmp_path, base=SWEEP)
    git("add", ".", cwd=tmp_path)
    git("commit", "-q", "-m", "sweep", cwd=tmp_path)
    run = greenbench("run", "sweep.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "[4/4]" in run.stderr and "2 ok, 2 skipped" in run.stderr
    assert_records_and_files(tmp_path / "runs" / "tiny")
    again = greenbench("run", "sweep.yaml", cwd=tmp_path)
    assert again.returncode == 0 and "4 already recorded, 0 to run" in again.stderr

    done = greenbench("report", cwd=tmp_path)  # no argument: the latest sweep under runs/

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "read 4 records from runs/tiny"
    out = tmp_path / "runs" / "tiny" / "report"  # beside the records, never in the source tree
    for name in ("report.md", "report.html", "results.csv", "results.parquet",
                 "quality_vs_energy.png", "quality_vs_energy.svg", "energy_breakdown.png",
                 "energy_breakdown.svg", "quality_curves.png", "quality_curves.svg"):
        assert (out / name).stat().st_size > 0, name
    assert "runs/tiny/report/report.html" in done.stdout
    assert git("status", "--porcelain", "--untracked-files=all", cwd=tmp_path) == ""
    assert not (tmp_path / "reports").exists()

    markdown = (out / "report.md").read_text()
    energy = markdown.split("## Energy and cost", 1)[1].split("##", 1)[0]
    rows = [line for line in energy.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 4  # header + one row per configuration (2 models x 2 precisions)
    assert "0, 1 skipped" in energy  # the 16-mixed points: counted, not averaged
    assert "estimated: cpu: codecarbon_cpu_load_estimate" in energy.replace("\\_", "_")
    assert "Energy is ESTIMATED" in markdown

    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 4 and set(results["status"]) == {"ok", "skipped"}
    assert pd.read_csv(out / "results.csv")["run_id"].tolist() == results["run_id"].tolist()

    html = (out / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in html
    assert not re.search(r"<script", html, re.IGNORECASE)


def assert_records_and_files(sweep_dir: Path) -> None:
    """What a real sweep of the reference models stores for each point."""
    records = read_records(sweep_dir)
    assert sorted(p.name for p in (sweep_dir / "records").iterdir()) == sorted(
        f"{run_id}.json" for run_id in records)
    assert "name: tiny" in (sweep_dir / "sweep.yaml").read_text()
    for run_id, stored in records.items():
        assert stored["schema"] == SCHEMA and stored["run_id"] == run_id
        assert stored["sweep"] == "tiny" and stored["node"]
        assert stored["executor"] == "local" and stored["node_concurrency"] == 1
        log = (sweep_dir / "logs" / f"{run_id}.log").read_text()
        assert f"greenbench: point {run_id} {stored['status']}" in log
        if stored["status"] == "skipped":
            assert stored["config"]["precision"] == "16-mixed"
            continue
        assert stored["status"] == "ok", stored["reason"]
        assert stored["timings"]["process_s"] >= stored["timings"]["trainer_fit_s"] > 0
        assert (sweep_dir / "images" / f"{run_id}.png").read_bytes().startswith(b"\x89PNG")
        assert stored["energy"]["windows"]["train"]["components"]["cpu"]["joules"] > 0
        assert stored["carbon"]["gco2"] > 0 and stored["flops_per_step"] > 0
        codecarbon_csv = (sweep_dir / "codecarbon" / f"{run_id}.csv").read_text()
        assert codecarbon_csv.startswith("timestamp,project_name,run_id,")


def test_report_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = {
        ("report",): "runs: no sweep results here",
        ("report", "nowhere"): "nowhere: not a sweep folder",
    }
    (tmp_path / "empty" / "records").mkdir(parents=True)
    cases[("report", "empty")] = "empty: no records yet"
    for args, expected in cases.items():
        done = cli(*args, cwd=tmp_path)
        assert done.returncode == 2, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "reports").exists()


def test_bad_baseline_is_a_user_error(tmp_path: Path) -> None:
    records = tmp_path / "runs" / "tiny" / "records"
    records.mkdir(parents=True)
    for run in (record("a"), record("b", precision="bf16-mixed")):
        (records / f"{run['run_id']}.json").write_text(json.dumps(run))
    done = cli("report", "runs/tiny", "--baseline", "colour=red", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --baseline: 'colour' is not a configuration key")
    assert not (tmp_path / "reports").exists() and not (tmp_path / "runs/tiny/report").exists()
    done = cli("report", "runs/tiny", "--baseline", "precision=bf16-mixed",
               "--out", "elsewhere", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "elsewhere" / "report.html").exists()
