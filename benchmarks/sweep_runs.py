"""Shared by the benchmark scripts: run a sweep as a user would, and read what it wrote.

``run_sweep(sweep, folder, timeout_s)`` writes a sweep (a dict) into ``folder`` with its
``output_dir`` there, runs ``greenbench run`` on it in a new process with an empty
feature-extractor cache (as on a new machine, so the extractor's one-time training is included),
stops it as Ctrl-C would after ``timeout_s``, and returns its exit code, wall time and records.
``run(sweep_file)`` does the same for a committed sweep file, in a temporary folder, and fails
when the sweep does. The processes it starts import greenbench from this checkout.
``describe_machine()`` is the line every CPU report carries.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from greenbench import environment

ROOT = Path(__file__).resolve().parent.parent
MEASURED_WINDOWS = ("warmup", "train", "eval", "generate")


@dataclass
class SweepRun:
    returncode: int
    wall_s: float
    records: list[dict] = field(default_factory=list)
    stopped: bool = False  # stopped at its time limit


def child_environment(**extra: str) -> dict[str, str]:
    """The environment of a process a benchmark starts: this checkout first on PYTHONPATH."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_sweep(sweep: dict, folder: Path, timeout_s: float | None = None) -> SweepRun:
    """``greenbench run`` on ``sweep`` in ``folder`` with an empty extractor cache, stopped (as
    Ctrl-C stops it: the points done are stored) after ``timeout_s``, or when this process is
    interrupted. A point that failed keeps the others' records."""
    sweep = {**sweep, "output_dir": str(folder)}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    env = child_environment(GREENBENCH_CACHE=str(folder / "cache"))
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "greenbench", "run", str(path)], env=env)
    stopped = False
    try:
        returncode = process.wait(timeout=None if timeout_s is None else max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        stopped = True
        returncode = _stop(process)
    finally:
        if process.poll() is None:  # interrupted here (a section's time limit, Ctrl-C)
            _stop(process)
    wall_s = time.perf_counter() - started
    records_dir = folder / sweep["name"] / "records"
    records = [json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))]
    return SweepRun(returncode, wall_s, records, stopped)


def _stop(process: subprocess.Popen) -> int:
    process.terminate()  # greenbench run stops cleanly on SIGTERM, points stored
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def run(sweep_file: Path, overrides: dict | None = None,
        timeout_s: float | None = None) -> tuple[float, list[dict]]:
    """Run ``sweep_file`` in a temporary output folder, with ``overrides`` merged into its
    sections (``{"energy": {"idle_every_s": 0}}``); (wall seconds, records by config). Raises
    SystemExit when the sweep fails or runs past ``timeout_s``."""
    sweep = yaml.safe_load(sweep_file.read_text())
    for section, values in (overrides or {}).items():
        sweep[section] = {**sweep.get(section, {}), **values}
    with tempfile.TemporaryDirectory(prefix="greenbench-bench-") as tmp:
        done = run_sweep(sweep, Path(tmp), timeout_s)
    if done.stopped:
        raise SystemExit(f"the sweep was stopped after {timeout_s:.0f} s; no report written")
    if done.returncode != 0:
        raise SystemExit(f"the sweep exited with {done.returncode}; no report written")
    records = sorted(done.records,
                     key=lambda r: tuple(r["config"][k] for k in ("model", "precision", "width")))
    return done.wall_s, records


def training_j(record: dict) -> float:
    """Training energy: the fit window, warm-up plus train."""
    return record["energy"]["windows"]["fit"]["total_j"]


def training_s(record: dict) -> float:
    return record["energy"]["windows"]["fit"]["duration_s"]


def measured_s(record: dict) -> float:
    """Seconds of measured work: the warm-up, train, eval and generate windows (idle is a
    baseline, not work)."""
    windows = record["energy"]["windows"]
    return sum(windows[name]["duration_s"] for name in MEASURED_WINDOWS if name in windows)


def overhead_s(record: dict) -> float:
    """What a point's process spends outside its measured windows (an idle baseline taken in
    the point counts as overhead): process wall time, as the parent sees it, minus the work."""
    return record["timings"]["process_s"] - measured_s(record)


def eval_share(record: dict) -> float:
    """Evaluation energy over training energy (warm-up included) of one point."""
    return record["energy"]["windows"]["eval"]["total_j"] / training_j(record)


def describe_machine() -> str:
    env = environment.describe()
    dirty = " with uncommitted changes" if env["git_dirty"] else ""
    return (
        f"Machine: {env['cpu']}, {os.cpu_count()} cores, {platform.system()}, no GPU; Python "
        f"{env['python']}, torch {env['torch']}, lightning {env['lightning']}; greenbench "
        f"commit {env['git_sha'] or 'unknown'}{dirty}."
    )
