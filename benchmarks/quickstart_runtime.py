"""How long the quickstart sweep takes on this machine, end to end, as a user runs it.

Runs ``greenbench run sweeps/quickstart.yaml`` once into a fresh temporary folder (see
``sweep_runs.py``), times the whole command, reads the records it wrote, and writes
``reports/quickstart-runtime.md``: the wall time against the 3-minute target, and per point
the time spent training (the energy callback's ``train`` and ``warmup`` windows), in fit (which
also holds the idle baseline and the meters' start), in scoring, and in the point's process
(Python and library start-up included), with the machine, versions and commit.

    python benchmarks/quickstart_runtime.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: this checkout

from benchmarks.sweep_runs import ROOT, describe_machine, eval_share, run, training_s

SWEEP = ROOT / "sweeps" / "quickstart.yaml"
REPORT = ROOT / "reports" / "quickstart-runtime.md"
TARGET_S = 180.0


def main() -> int:
    wall_s, records = run(SWEEP)
    lines = [
        "# Quickstart sweep: wall time",
        "",
        f"`greenbench run sweeps/quickstart.yaml`, {len(records)} points, from a cold start "
        f"of the command: **{wall_s:.1f} s** (target: under {TARGET_S:.0f} s, "
        f"{'met' if wall_s < TARGET_S else 'NOT met'}).",
        "",
        describe_machine(),
        "",
        "| model | precision | width | status | training s | fit s | eval s | eval / training "
        "energy | point process s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        c, t = r["config"], r["timings"]
        lines.append(
            f"| {c['model']} | {c['precision']} | {c['width']:g} | {r['status']} | "
            f"{training_s(r):.1f} | {t['trainer_fit_s']:.1f} | {t['eval_s']:.2f} | "
            f"{eval_share(r):.1%} | {t['process_s']:.1f} |"
        )
    train = sum(training_s(r) for r in records)
    process = sum(r["timings"]["process_s"] for r in records)
    lines += [
        "",
        f"Training itself is {train:.1f} s of the {wall_s:.1f} s; the point processes take "
        f"{process:.1f} s in all, the rest of each being interpreter and library start-up "
        "(every point runs in a fresh process), the idle baseline, the meters' start, the "
        "feature extractor (trained once, then read from its cache), data loading and scoring.",
        "",
    ]
    REPORT.write_text("\n".join(lines))
    print(f"wrote {REPORT.relative_to(ROOT)}: {wall_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
