"""A greener sweep, measured: predict a sweep before paying for it, and stop at a target.

One session, one machine, the classifier of ``examples/classifier.yaml`` (``examples/mypkg``)
trained for a fixed budget, no EarlyStopping, on a grid of data fraction x width x learning
rate (8 configurations), each ``greenbench`` command in a fresh process as a user runs it:

1. ``greenbench plan --pilot-steps N`` (short pilots), then ``greenbench plan`` with the
   default pilot (10 periods of the meter), each into its own folder;
2. ``greenbench run``: the full sweep, every point its whole budget;
3. the target: the best val_acc that half the configurations reached in step 2 (half-way
   between the fourth and fifth configuration's best); ``greenbench run`` of the same sweep
   with ``quality.target`` and ``train.stop_at_target: true``.

It writes ``reports/greener-sweep.md`` and ``.json``: per configuration the predicted and
measured training energy and the error of both plans, their median and worst absolute error;
the pilots' cost as a share of the sweep's training energy, over all points and over the
points that train at least 50 times the short pilot's batches; and the training energy of the
stop-at-target sweep over the full sweep's, with how many configurations reached the target.

    python benchmarks/greener_sweep.py [--epochs 120] [--pilot-steps 400]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: this checkout

from benchmarks.sweep_runs import ROOT, child_environment, describe_machine

EXAMPLE = ROOT / "examples" / "classifier.yaml"
REPORT = ROOT / "reports" / "greener-sweep.md"
QUALIFYING = 50  # points that train at least this many times the pilot's batches
GOALS = {"median_error": 0.15, "pilot_share": 0.10, "stop_ratio": 0.6}


def benchmark_sweep(epochs: int) -> dict:
    """``examples/classifier.yaml`` for a fixed budget: no EarlyStopping, no logger, batches
    of 8 (so that a point trains long enough to measure), a grid over data fraction, width
    and learning rate."""
    sweep = yaml.safe_load(EXAMPLE.read_text())
    sweep["name"] = "greener-sweep"
    sweep["data"]["init_args"] = {**sweep["data"]["init_args"], "batch_size": 8}
    sweep["train"] = {"epochs": epochs}
    sweep["energy"] = {"idle_seconds": 5}
    sweep["trainer"] = {"gradient_clip_val": 1.0}
    sweep["grid"] = {"data_fraction": [0.25, 1.0], "width": [0.5, 1.0],
                     "model.init_args.lr": [0.05, 0.2]}
    return sweep


def cpu_times() -> list[int]:
    """The machine's CPU time counters (/proc/stat's ``cpu`` line): user, nice, system, idle,
    iowait, irq, softirq, steal; empty where there is no /proc."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    except (OSError, ValueError):
        return []


def greenbench(folder: Path, phases: dict, phase: str, *args: str
               ) -> subprocess.CompletedProcess:
    """A ``greenbench`` command in a fresh process, run in ``folder``; its wall time, and the
    share of the machine's CPU time that was busy and that was stolen (by the hypervisor, from
    this virtual machine) while it ran, go into ``phases[phase]``: a prediction made at one
    load and checked at another is off by as much."""
    started, before = time.perf_counter(), cpu_times()
    done = subprocess.run([sys.executable, "-m", "greenbench", *args], cwd=folder,
                          env=child_environment(GREENBENCH_CACHE=str(folder / "cache")),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"greenbench {' '.join(args)} exited {done.returncode}:\n"
                         f"{done.stderr[-3000:]}")
    after = cpu_times()
    phases[phase] = {"wall_s": round(time.perf_counter() - started, 1)}
    if before and after:
        spent = [end - start for start, end in zip(before, after, strict=True)]
        total = sum(spent) or 1
        phases[phase].update(busy=round(1 - (spent[3] + spent[4]) / total, 3),
                             steal=round(spent[7] / total, 4))
    return done


def write(folder: Path, sweep: dict, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))]


def fit_j(record: dict) -> float:
    return record["energy"]["windows"]["fit"]["total_j"]


def configuration(record: dict) -> str:
    c = record["config"]
    return (f"f={c['data_fraction']:g} w={c['width']:g} "
            f"lr={c['model_init_args']['lr']:g}")


def errors(plan: dict, measured: dict[str, dict]) -> list[dict]:
    """Per predicted point: its configuration, predicted and measured training energy, and
    the error (predicted over measured, minus 1)."""
    rows = []
    for point in plan["points"]:
        record = measured[point["run_id"]]
        rows.append({"configuration": configuration(record),
                     "predicted_j": point["predicted_fit_j"], "measured_j": fit_j(record),
                     "low_j": point["predicted_fit_j_low"], "high_j": point["predicted_fit_j_high"],
                     "batches": record["train"]["batches"],
                     "error": point["predicted_fit_j"] / fit_j(record) - 1,
                     "time_error": point["predicted_fit_s"] /
                     record["energy"]["windows"]["fit"]["duration_s"] - 1})
    return rows


def summary_of(rows: list[dict]) -> dict:
    worst = max(rows, key=lambda row: abs(row["error"]))
    inside = sum(1 for row in rows if row["low_j"] is not None
                 and row["low_j"] <= row["measured_j"] <= row["high_j"])
    return {"median_abs_error": statistics.median(abs(row["error"]) for row in rows),
            "worst_error": worst["error"], "worst": worst["configuration"],
            "inside_interval": inside, "points": len(rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--pilot-steps", type=int, default=400)
    args = parser.parse_args()
    machine = describe_machine()  # the commit that runs, before anything is written
    sweep = benchmark_sweep(args.epochs)
    with tempfile.TemporaryDirectory(prefix="greenbench-greener-") as tmp:
        folder = Path(tmp)
        shutil.copytree(ROOT / "examples" / "mypkg", folder / "mypkg",
                        ignore=shutil.ignore_patterns("__pycache__"))
        full_file = write(folder, {**sweep, "output_dir": "full"}, "full")
        auto_file = write(folder, {**sweep, "output_dir": "auto"}, "auto")
        phases: dict = {}
        short_out = greenbench(folder, phases, "plan, short pilot", "plan", str(full_file),
                               "--pilot-steps", str(args.pilot_steps))
        auto_out = greenbench(folder, phases, "plan, default pilot", "plan", str(auto_file))
        greenbench(folder, phases, "full sweep", "run", str(full_file))
        full_dir, auto_dir = folder / "full" / sweep["name"], folder / "auto" / sweep["name"]
        full = {record["run_id"]: record for record in records(full_dir)}
        plans = {"short": json.loads((full_dir / "plan.json").read_text()),
                 "default": json.loads((auto_dir / "plan.json").read_text())}

        best = sorted((max(p["val_acc"] for p in r["quality_curve"]) for r in full.values()),
                      reverse=True)
        half = len(best) // 2
        target = round((best[half - 1] + best[half]) / 2, 5)
        stop = {**sweep, "output_dir": "stop",
                "quality": {**sweep["quality"], "target": target},
                "train": {**sweep["train"], "stop_at_target": True}}
        greenbench(folder, phases, "stop at target", "run", str(write(folder, stop, "stop")))
        stopped = records(folder / "stop" / sweep["name"])
        greenbench(folder, phases, "report", "report", str(full_dir), "--out",
                   str(folder / "report"))
        report_md = (folder / "report" / "report.md").read_text()

    rows = {name: errors(plan, full) for name, plan in plans.items()}
    sweep_j = sum(fit_j(r) for r in full.values())
    short_pilot = plans["short"]["pilot_batches"]
    qualifying = [r for r in full.values() if r["train"]["batches"] >= QUALIFYING * short_pilot]
    qualifying_configs = {configuration(r) for r in qualifying}
    pilots_of_qualifying = sum(pilot["j"] for pilot in plans["short"]["pilots"]
                               if configuration(full[pilot["run_id"]]) in qualifying_configs)
    stop_j = sum(fit_j(r) for r in stopped)
    reached = sorted({configuration(r) for r in stopped if r["quality"]["target_reached"]})
    result = {
        "machine": machine, "sweep": sweep, "epochs": args.epochs, "pilot_steps": short_pilot,
        "phases": phases,
        "plans": {name: {**summary_of(rows[name]), "rows": rows[name],
                         "pilot_j": plans[name]["pilot_j"], "pilot_s": plans[name]["pilot_s"],
                         "pilot_share": plans[name]["pilot_j"] / sweep_j}
                  for name in plans},
        "sweep_fit_j": sweep_j,
        "qualifying_points": len(qualifying),
        "qualifying_pilot_share": pilots_of_qualifying / sum(fit_j(r) for r in qualifying)
        if qualifying else None,
        "target": target,
        "stop_fit_j": stop_j, "stop_ratio": stop_j / sweep_j,
        "configurations_reaching_target": reached,
        "stopped_by": {configuration(r): [r["train"]["stopped_by"],
                                          r["train"]["stopped_at"]["epoch"]] for r in stopped},
        "plan_table": {"short": short_out.stdout, "default": auto_out.stdout},
        "report_notes": [line for line in report_md.splitlines() if "Predicted" in line],
    }
    REPORT.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    REPORT.write_text(render(result))
    print(REPORT.read_text())
    return 0


def render(result: dict) -> str:
    short, default = result["plans"]["short"], result["plans"]["default"]

    def met(value: float | None, goal: float) -> str:
        return "-" if value is None else ("met" if value <= goal else "NOT met")

    lines = [
        "# A greener sweep: predicted before it was paid for, stopped at its target",
        "",
        f"`benchmarks/greener_sweep.py`. {result['machine']} CPU energy is CodeCarbon's "
        "load-based estimate and RAM its constant (no RAPL here): every figure is an estimate "
        "and the records say so.",
        "",
        f"The sweep: `examples/classifier.yaml`'s classifier (`examples/mypkg`), batches of 8, "
        f"{result['epochs']} epochs, no EarlyStopping; data fraction 0.25 and 1 x width 0.5 "
        "and 1 x learning rate 0.05 and 0.2: 8 configurations, one point each.",
        "",
        "| phase | wall time (s) | CPU busy | CPU stolen by the host |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {name} | {phase['wall_s']} | {_share(phase.get('busy'))} | "
          f"{_share(phase.get('steal'))} |" for name, phase in result["phases"].items()),
        "",
        "## Goals",
        "",
        "| goal | measured | |",
        "| --- | ---: | --- |",
        f"| median absolute prediction error of training energy <= 15 % (pilot of "
        f"{result['pilot_steps']} batches) | {short['median_abs_error']:.1%} (worst "
        f"{short['worst_error']:+.1%}, {short['worst']}) | "
        f"{met(short['median_abs_error'], GOALS['median_error'])} |",
        f"| the same, default pilot (10 periods of the meter) | "
        f"{default['median_abs_error']:.1%} (worst {default['worst_error']:+.1%}, "
        f"{default['worst']}) | {met(default['median_abs_error'], GOALS['median_error'])} |",
        f"| pilot cost <= 10 % of the training energy of the points that train >= "
        f"{QUALIFYING}x the pilot's batches ({result['qualifying_points']} points) | "
        + ("-" if result["qualifying_pilot_share"] is None else
           f"{result['qualifying_pilot_share']:.1%}")
        + f" | {met(result['qualifying_pilot_share'], GOALS['pilot_share'])} |",
        f"| stop_at_target sweep <= 0.6 x the full sweep's training energy, at a target half "
        f"the configurations reach (val_acc >= {result['target']:g}) | "
        f"{result['stop_ratio']:.2f} ({result['stop_fit_j']:.0f} J against "
        f"{result['sweep_fit_j']:.0f} J) | {met(result['stop_ratio'], GOALS['stop_ratio'])} |",
        "",
        "The pilots' cost over the whole sweep: "
        f"{short['pilot_share']:.1%} (pilot of {result['pilot_steps']} batches, "
        f"{short['pilot_j']:.0f} J, {short['pilot_s']:.0f} s of planning) and "
        f"{default['pilot_share']:.1%} (default pilot, {default['pilot_j']:.0f} J, "
        f"{default['pilot_s']:.0f} s). A pilot's joules are everything its meters measured, "
        "the idle baseline included; the wall time also holds each pilot's process start.",
        "",
        "## Prediction against measurement, per configuration",
        "",
        "| configuration | batches | measured (J) | predicted, short pilot (J) | error | "
        "time error | predicted, default pilot (J) | error | time error |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_default = {row["configuration"]: row for row in default["rows"]}
    for row in sorted(short["rows"], key=lambda row: row["configuration"]):
        other = by_default[row["configuration"]]
        lines.append(
            f"| {row['configuration']} | {row['batches']} | {row['measured_j']:.0f} | "
            f"{row['predicted_j']:.0f} ({_interval(row)}) | {row['error']:+.1%} | "
            f"{row['time_error']:+.1%} | {other['predicted_j']:.0f} ({_interval(other)}) | "
            f"{other['error']:+.1%} | {other['time_error']:+.1%} |")
    lines += [
        "",
        f"Measured training energy fell inside the predicted interval for "
        f"{short['inside_interval']} of {short['points']} points (short pilot) and "
        f"{default['inside_interval']} of {default['points']} (default pilot): the interval is "
        "the pilot's own spread only. The time error is the predicted training time against "
        "the measured one: on a CPU whose energy is estimated from its load, an error in "
        "energy that matches the error in time comes from the machine running slower or "
        "faster than when the pilot ran, not from the model of the point.",
        "",
        "## Stopping at the target",
        "",
        f"Target val_acc {result['target']:g}, reached by "
        f"{len(result['configurations_reaching_target'])} of 8 configurations "
        f"({', '.join(result['configurations_reaching_target'])}).",
        "",
        "| configuration | stopped by | at epoch (from 0) |",
        "| --- | --- | ---: |",
    ]
    for name, (by, epoch) in sorted(result["stopped_by"].items()):
        lines.append(f"| {name} | {by} | {epoch} |")
    lines += ["", "## What `greenbench plan` printed (short pilot)", "", "```",
              result["plan_table"]["short"].rstrip(), "```", "",
              "## The report's note on the plan (full sweep)", ""]
    lines += result["report_notes"] or ["(none)"]
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _interval(row: dict) -> str:
    if row["low_j"] is None:
        return "no interval"
    return f"{row['low_j']:.0f}-{row['high_j']:.0f}"


if __name__ == "__main__":
    raise SystemExit(main())
