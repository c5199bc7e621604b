"""Shared by the benchmark scripts: run a committed sweep file as a user would, and read it.

``run(sweep_file)`` copies the sweep with ``output_dir`` pointed at a fresh temporary folder,
runs ``greenbench run`` on it in a new process with an empty feature-extractor cache (as on a
new machine, so the extractor's one-time training is included), and returns the command's wall
time and the records it wrote. ``describe_machine()`` is the line every report carries.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from greenbench import environment

ROOT = Path(__file__).resolve().parent.parent


def run(sweep_file: Path, overrides: dict | None = None) -> tuple[float, list[dict]]:
    """Run ``sweep_file`` in a temporary output folder, with ``overrides`` merged into its
    sections (``{"energy": {"idle_every_s": 0}}``); (wall seconds, records by config)."""
    with tempfile.TemporaryDirectory(prefix="greenbench-bench-") as tmp:
        sweep = yaml.safe_load(sweep_file.read_text())
        for section, values in (overrides or {}).items():
            sweep[section] = {**sweep.get(section, {}), **values}
        sweep["output_dir"] = tmp
        copy = Path(tmp) / sweep_file.name
        copy.write_text(yaml.safe_dump(sweep, sort_keys=False))
        started = time.perf_counter()
        env = {**os.environ, "GREENBENCH_CACHE": str(Path(tmp) / "cache")}
        done = subprocess.run([sys.executable, "-m", "greenbench", "run", str(copy)], env=env)
        wall_s = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"the sweep exited with {done.returncode}; no report written")
        records_dir = Path(tmp) / sweep["name"] / "records"
        records = [json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))]
    records.sort(key=lambda r: tuple(r["config"][k] for k in ("model", "precision", "width")))
    return wall_s, records


def training_j(record: dict) -> float:
    """Training energy: the fit window, warm-up plus train."""
    return record["energy"]["windows"]["fit"]["total_j"]


def training_s(record: dict) -> float:
    return record["energy"]["windows"]["fit"]["duration_s"]


MEASURED_WINDOWS = ("warmup", "train", "eval", "generate")


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
