"""Per-point overhead: how much of a sweep is spent outside the measured windows, before and after
warm-started point processes and a per-sweep idle baseline, measured A/B in one run.

For each arm the quickstart sweep runs from a cold start of ``greenbench run`` into a fresh
folder with an empty extractor cache (``sweep_runs.run``). A point's overhead is its
``timings.process_s`` (its process's wall time, as the parent sees it) minus its warm-up, train,
eval and generate window durations; an idle baseline taken inside the point counts as overhead.
The yardstick is a cold ``python -c "import torch, lightning.pytorch"`` on the same machine in
the same run (the median of three, taken between the arms), since every cost here scales with
the machine: the target is a median overhead of at most half that import. Writes
``reports/point-overhead.md``.

    python benchmarks/point_overhead.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: this checkout

import statistics
import subprocess
import time

from benchmarks.sweep_runs import ROOT, describe_machine, measured_s, overhead_s, run

# Settings
SWEEP = ROOT / "sweeps" / "quickstart.yaml"
REPORT = ROOT / "reports" / "point-overhead.md"
ARMS = {  # name -> what the sweep file's sections become for it
    "before: cold start, idle baseline per point": {
        "executor": {"start": "cold"}, "energy": {"idle_every_s": 0}},
    "after: warm start, idle baseline per sweep": {
        "executor": {"start": "warm"}, "energy": {"idle_every_s": 600}},
}
TARGET = 0.5  # median overhead over the cold import time


def cold_import_s() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, lightning.pytorch"], check=True)
    return time.perf_counter() - started


def main() -> int:
    imports = [cold_import_s()]
    results = {}
    for name, overrides in ARMS.items():
        wall_s, records = run(SWEEP, overrides)
        results[name] = (wall_s, records)
        imports.append(cold_import_s())
    import_s = statistics.median(imports)

    lines = [
        "# Per-point overhead: before and after warm start",
        "",
        f"`python benchmarks/point_overhead.py`: `greenbench run sweeps/quickstart.yaml` from a "
        f"cold start, once per arm, in one run. {describe_machine()}",
        "",
        f"A cold `import torch, lightning.pytorch` takes **{import_s:.2f} s** here (median of "
        f"{len(imports)}: {', '.join(f'{s:.2f}' for s in imports)}).",
        "",
        "| arm | sweep wall s | measured work s | wall / work | median overhead s | "
        "overhead / import | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, (wall_s, records) in results.items():
        work = sum(measured_s(r) for r in records)
        median = statistics.median(overhead_s(r) for r in records)
        ratio = median / import_s
        verdict = ("met" if ratio <= TARGET else "not met") if name.startswith("after") else ""
        lines.append(f"| {name} | {wall_s:.1f} | {work:.1f} | {wall_s / work:.2f} | "
                     f"{median:.2f} | {ratio:.2f} | <= {TARGET} {verdict} |")
    for name, (_, records) in results.items():
        lines += ["", f"## {name}", "",
                  "| point | status | process s | measured s | overhead s | setup s | "
                  "extractor s | meters start s | idle s | baseline |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in records:
            c, t, energy = r["config"], r["timings"], r["energy"]
            baseline = energy.get("baseline") or {}
            shared = (f"shared, {baseline['age_s']:.0f} s old" if baseline.get("shared")
                      else "measured here")
            idle = 0.0 if baseline.get("shared") else energy["windows"]["idle"]["duration_s"]
            lines.append(
                f"| {c['model']} {c['precision']} w={c['width']:g} | {r['status']} | "
                f"{t['process_s']:.2f} | {measured_s(r):.2f} | {overhead_s(r):.2f} | "
                f"{t['setup_s']:.2f} | {t['extractor_s']:.2f} | "
                f"{energy.get('meters_start_s', float('nan')):.2f} | {idle:.2f} | {shared} |")
    lines += ["", _remaining(results), ""]
    REPORT.write_text("\n".join(lines))
    print(f"wrote {REPORT.relative_to(ROOT)}")
    return 0


def _remaining(results: dict) -> str:
    """What is left per point after the change, each part's median cost."""
    records = list(results.values())[-1][1]
    parts = {
        "setup (dataset, model, Trainer, environment)": [r["timings"]["setup_s"] for r in records],
        "feature extractor (cache read; built once per machine)":
            [r["timings"]["extractor_s"] for r in records],
        "meters' start (CodeCarbon, NVML)":
            [r["energy"].get("meters_start_s", 0.0) for r in records],
    }
    accounted = [sum(values[i] for values in parts.values()) for i in range(len(records))]
    parts["the rest (fork, imports not preloaded, sample grid, record, handoff)"] = [
        overhead_s(r) - a for r, a in zip(records, accounted, strict=True)]
    rows = [f"- {name}: median {statistics.median(values):.2f} s" for name, values in
            parts.items()]
    return "What each point still spends outside its windows, after:\n\n" + "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
