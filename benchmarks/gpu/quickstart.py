"""The ``quickstart`` section: the wall time of ``greenbench run sweeps/quickstart.yaml`` from a
cold start, with an empty extractor cache, stopped at the section's time limit."""

from __future__ import annotations

from typing import Any

from benchmarks.gpu.common import ROOT, Context, num, rounded
from benchmarks.sweep_runs import run, training_s

QUICKSTART = ROOT / "sweeps" / "quickstart.yaml"
TARGET_S = 180.0  # quickstart_runtime.py's target, on a 2-core CPU


def check(ctx: Context) -> dict[str, Any]:
    try:
        wall_s, records = run(QUICKSTART, timeout_s=ctx.time_limit_s - 35)
    except SystemExit as stop:  # sweep_runs.run's way of saying the sweep failed or overran
        raise RuntimeError(str(stop)) from None
    rows = [{"model": r["config"]["model"], "precision": r["config"]["precision"],
             "width": r["config"]["width"], "status": r["status"],
             "training_s": rounded(training_s(r) if r["status"] == "ok" else None, 1),
             "process_s": rounded((r.get("timings") or {}).get("process_s"), 1)}
            for r in records]
    return {"wall_s": round(wall_s, 1), "points": len(records), "rows": rows,
            "target_s": TARGET_S}


def render(entry: dict[str, Any]) -> list[str]:
    lines = [
        f"`greenbench run sweeps/quickstart.yaml`, {num(entry['points'], 0)} points, from a "
        f"cold start of the command with an empty extractor cache: **{num(entry['wall_s'], 1)}"
        f" s** (the CPU target is under {num(entry['target_s'], 0)} s: "
        f"{'met' if entry['wall_s'] < entry['target_s'] else 'NOT met'} here).",
        "",
        "| model | precision | width | status | training s | point process s |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in entry["rows"]:
        lines.append(f"| {r['model']} | {r['precision']} | {num(r['width'], 1)} | "
                     f"{r['status']} | {num(r['training_s'], 1)} | {num(r['process_s'], 1)} |")
    return lines
