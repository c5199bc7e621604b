"""How long the quickstart sweep takes on this machine, end to end, as a user runs it.

Runs ``greenbench run benchmarks/quickstart.yaml`` once into a fresh temporary folder (the
sweep file is copied with ``output_dir`` pointed there), times the whole command, reads the
records it wrote, and writes ``reports/quickstart-runtime.md``: the wall time against the
3-minute target, and per point the time spent training (the energy callback's ``train`` and
``warmup`` windows), in fit (which also holds the idle baseline and the meters' start) and in
the point's process (Python and library start-up included), with the machine, versions and
commit.

    python benchmarks/quickstart_runtime.py
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
SWEEP = ROOT / "benchmarks" / "quickstart.yaml"
REPORT = ROOT / "reports" / "quickstart-runtime.md"
TARGET_S = 180.0


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="greenbench-bench-") as tmp:
        sweep = yaml.safe_load(SWEEP.read_text())
        sweep["output_dir"] = tmp
        sweep_file = Path(tmp) / "quickstart.yaml"
        sweep_file.write_text(yaml.safe_dump(sweep, sort_keys=False))

        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "greenbench", "run", str(sweep_file)])
        wall_s = time.perf_counter() - started
        if done.returncode != 0:
            print(f"the sweep exited with {done.returncode}; no report written", file=sys.stderr)
            return 1
        records_dir = Path(tmp) / sweep["name"] / "records"
        records = [json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))]

    records.sort(key=lambda r: tuple(r["config"][k] for k in ("model", "precision", "width")))
    env = environment.describe()
    lines = [
        "# Quickstart sweep: wall time",
        "",
        f"`greenbench run benchmarks/quickstart.yaml`, {len(records)} points, from a cold start "
        f"of the command: **{wall_s:.1f} s** (target: under {TARGET_S:.0f} s, "
        f"{'met' if wall_s < TARGET_S else 'NOT met'}).",
        "",
        f"Machine: {env['cpu']}, {os.cpu_count()} cores, {platform.system()}; Python "
        f"{env['python']}, torch {env['torch']}, lightning {env['lightning']}; "
        f"greenbench commit {env['git_sha'] or 'unknown'}"
        f"{' (with uncommitted changes)' if env['git_dirty'] else ''}.",
        "",
        "| model | precision | width | status | training s | fit s | point process s |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in records:
        c, t = r["config"], r["timings"]
        lines.append(
            f"| {c['model']} | {c['precision']} | {c['width']:g} | {r['status']} | "
            f"{training_s(r):.1f} | {t.get('train_s', 0):.1f} | {t['process_s']:.1f} |"
        )
    train = sum(training_s(r) for r in records)
    process = sum(r["timings"]["process_s"] for r in records)
    lines += [
        "",
        f"Training itself is {train:.1f} s of the {wall_s:.1f} s; the point processes take "
        f"{process:.1f} s in all, the rest of each being interpreter and library start-up "
        "(every point runs in a fresh process), the idle baseline, the meters' start, data "
        "loading and sampling.",
        "",
    ]
    REPORT.write_text("\n".join(lines))
    print(f"wrote {REPORT.relative_to(ROOT)}: {wall_s:.1f} s")
    return 0


def training_s(record: dict) -> float:
    windows = (record.get("energy") or {}).get("windows", {})
    return sum(windows.get(w, {}).get("duration_s", 0.0) for w in ("warmup", "train"))


if __name__ == "__main__":
    sys.exit(main())
