"""How long ``greenbench report`` takes on 10,000 records (target: under 10 s on 2 cores).

Writes 10,000 synthetic records, shaped exactly like greenbench's (every energy window with its
components, quality with a five-point curve), into a temporary sweep folder: 2 models x 2
precisions x 5 widths x 5 data fractions x 10 seeds x 10 repeats, so 100 configurations of 100
runs. Then times ``greenbench report`` on it as a user runs it (a new process, imports
included), three times, and writes the median to ``reports/report-scale.md``. The numbers in the
records are random (seeded); only their shape and count matter here.

    python benchmarks/report_scale.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: this checkout

import itertools
import random
import statistics
import subprocess
import tempfile
import time

from benchmarks.sweep_runs import ROOT, describe_machine
from greenbench.records import OK, finish, new_record, run_id, to_json

REPORT = ROOT / "reports" / "report-scale.md"
TARGET_S = 10.0
REPEATS = 3
AXES = {
    "model": ["gan", "vae"], "precision": ["32-true", "bf16-mixed"],
    "width": [0.25, 0.5, 0.75, 1.0, 1.5], "data_fraction": [0.1, 0.25, 0.5, 0.75, 1.0],
    "seed": list(range(10)), "repeat": list(range(10)),
}


def synthetic_record(point: dict, rng: random.Random) -> dict:
    config = {"dataset": "digits", "image_size": 16, "latent_dim": 32, "batch_size": 64,
              "epochs": 20, "steps": None, "lr": 2e-4, **point,
              "eval": {"num_samples": 1000, "every_n_epochs": 4, "target_kid": 0.6,
                       "min_extractor_accuracy": None, "importance_samples": 16}}
    record = new_record(run_id(config), "scale", config)
    scale = point["width"] ** 2 * point["data_fraction"]
    windows = {}
    for name, seconds in (("idle", 2.0), ("warmup", 0.2), ("train", 10 * scale),
                          ("eval", 0.5), ("fit", 10 * scale + 0.2), ("total", 10 * scale + 0.7)):
        cpu, ram = rng.uniform(5, 8) * seconds, 20.0 * seconds
        windows[name] = {
            "duration_s": seconds,
            "components": {
                "gpu": {"joules": None, "source": "unavailable", "measured": False,
                        "reason": "no GPU in use"},
                "cpu": {"joules": cpu, "source": "codecarbon_cpu_load_estimate",
                        "measured": False, "reason": None},
                "ram": {"joules": ram, "source": "codecarbon_ram_estimate", "measured": False,
                        "reason": None},
            },
            "total_j": cpu + ram, "net_j": cpu, "samples": 28000, "j_per_1k_samples": cpu / 28,
            "measured": False, "valid": True, "reason": None,
        }
    record["energy"] = {"windows": windows, "idle_power_w": 21.0, "warnings": [], "meters": {},
                        "settings": {"idle_seconds": 2, "warmup_steps": 10, "sample_hz": 10}}
    record["carbon"] = {"kwh": windows["total"]["total_j"] / 3.6e6, "gco2": 0.02,
                        "intensity_g_per_kwh": 475.0, "intensity_source": "world average",
                        "pue": 1.0}
    kid = rng.uniform(0.4, 1.6) / (0.5 + scale)
    final = {"epoch": 20, "kid": kid, "kid_std": 0.05, "fid": 20 * kid, "precision": 0.8,
             "recall": 0.8, "density": 0.5, "coverage": 0.6, "memorisation": 0.1}
    record["quality"] = {"final": final, "best": final, "withheld": None,
                         "extractor": {"id": "digits-16px-r1-synthetic", "sha256": "0" * 64,
                                       "accuracy": 0.98, "recipe": {"version": 1}},
                         "energy_to_quality_j": None}
    record["quality_curve"] = [
        {"epoch": e, "step": 22 * e, "fit_j": windows["fit"]["total_j"] * e / 20,
         "kid": kid * (1 + (20 - e) / 10), "fid": 20 * kid, "nll_nats": None}
        for e in (4, 8, 12, 16, 20)
    ]
    record["train"] = {"batches": 440, "optimizer_steps": 880, "samples_seen": 28160,
                       "final_losses": {}}
    record["flops_per_step"] = int(1e9 * scale)
    return finish(record, OK)


def main() -> int:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="greenbench-scale-") as tmp:
        sweep_dir = Path(tmp) / "scale"
        (sweep_dir / "records").mkdir(parents=True)
        (sweep_dir / "sweep.yaml").write_text("name: scale\ndescription: synthetic records\n")
        count = 0
        for values in itertools.product(*AXES.values()):
            record = synthetic_record(dict(zip(AXES, values, strict=True)), rng)
            (sweep_dir / "records" / f"{record['run_id']}.json").write_text(to_json(record))
            count += 1
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "greenbench", "report", str(sweep_dir), "--out",
                 str(Path(tmp) / "out")], capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
        outputs = sorted(p.name for p in (Path(tmp) / "out").iterdir())
    median = statistics.median(times)
    REPORT.write_text("\n".join([
        "# greenbench report at scale",
        "",
        f"`greenbench report` on {count:,} records (100 configurations of 100 runs, each "
        f"record with five energy windows and a five-point quality curve), in a new process "
        f"as a user runs it: **median {median:.2f} s** over {REPEATS} runs (each: "
        f"{', '.join(f'{t:.2f}' for t in times)} s); target under {TARGET_S:.0f} s: "
        f"{'met' if median < TARGET_S else 'NOT met'}. It wrote {len(outputs)} files "
        f"({', '.join(outputs)}).",
        "",
        describe_machine(),
        "",
    ]))
    print(f"wrote {REPORT.relative_to(ROOT)}: median {median:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
