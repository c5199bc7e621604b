"""The ``precisions`` section: every precision greenbench runs on CUDA (32-true, 16-mixed,
bf16-mixed, 16-true, bf16-true) for the GAN and the VAE on 32x32 digits, as real sweep points
(``greenbench run`` on a generated sweep file, stopped at the section's time limit): fit-window
energy, generation energy per 1k images, time, KID and status, as each record says them."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.gpu.common import Context, Settings, num, pct, rounded
from benchmarks.sweep_runs import run_sweep

MODELS = ("gan", "vae")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
IMAGE_SIZE, BATCH_SIZE, WIDTH = 32, 128, 1.0
ENERGY = {"idle_seconds": 2.0, "warmup_steps": 20, "sample_hz": 10.0}


def precision_sweep(settings: Settings) -> dict[str, Any]:
    """The sweep file the section runs (``output_dir`` is set when it runs)."""
    return {
        "name": "gpu-validation-precisions",
        "description": "GAN and VAE at every CUDA precision, 32x32 digits, a short step budget",
        "dataset": {"name": "digits", "image_size": IMAGE_SIZE},
        "train": {"steps": settings.steps},
        "energy": dict(ENERGY),
        "batch_size": BATCH_SIZE,
        "width": WIDTH,
        "grid": {"model": list(MODELS), "precision": list(PRECISIONS)},
    }


def check(ctx: Context) -> dict[str, Any]:
    sweep = precision_sweep(ctx.settings)
    with tempfile.TemporaryDirectory(prefix="greenbench-gv-") as tmp:
        done = run_sweep(sweep, Path(tmp), ctx.time_limit_s - 35)  # 30 s to stop, and spare
    ctx.records = done.records
    if done.returncode == 2:
        raise RuntimeError("greenbench run refused the generated sweep (exit 2); see its output")
    found = {(r["config"]["model"], r["config"]["precision"]): r for r in done.records}
    missing = ("the sweep was stopped at its time limit" if done.stopped
               else f"greenbench run exited {done.returncode} without a record for it")
    rows = [precision_row(found[key]) if key in found else
            {"model": key[0], "precision": key[1], "status": "not run", "reason": missing}
            for key in itertools.product(MODELS, PRECISIONS)]
    return {"rows": rows, "wall_s": round(done.wall_s, 1), "exit_code": done.returncode,
            "steps": ctx.settings.steps, "batch_size": BATCH_SIZE, "image_size": IMAGE_SIZE,
            "width": WIDTH}


def precision_row(record: dict[str, Any]) -> dict[str, Any]:
    """One point of the precision sweep, as the report shows it: only what the record says."""
    config, windows = record["config"], (record.get("energy") or {}).get("windows") or {}
    fit = windows.get("fit") or {}
    gpu = (fit.get("components") or {}).get("gpu") or {}
    generation = record.get("generation") or {}
    final = (record.get("quality") or {}).get("final") or {}
    per_image = generation.get("j_per_image")
    return {
        "model": config["model"], "precision": config["precision"],
        "status": record["status"], "reason": record.get("reason"),
        "fit_s": rounded(fit.get("duration_s"), 2), "fit_j": rounded(fit.get("total_j"), 1),
        "fit_gpu_j": rounded(gpu.get("joules"), 1), "gpu_source": gpu.get("source"),
        "fit_reliable": fit.get("reliable"), "fit_reliability_reason":
            fit.get("reliability_reason"),
        "fit_cross_check_rel": rounded((fit.get("cross_check_rel") or {}).get("gpu"), 5),
        "generate_j_per_1k": rounded(1000 * per_image if per_image is not None else None, 2),
        "kid": rounded(final.get("kid"), 4),
        "process_s": rounded((record.get("timings") or {}).get("process_s"), 1),
    }


def render(entry: dict[str, Any]) -> list[str]:
    lines = [
        f"`greenbench run` on a generated sweep: {num(entry['steps'], 0)} training batches of "
        f"{num(entry['batch_size'], 0)} per point, image size {num(entry['image_size'], 0)}, "
        f"width {num(entry['width'], 1)}; {num(entry['wall_s'], 1)} s for the whole sweep, "
        f"exit code {num(entry['exit_code'], 0)}. Fit J is the fit window's total (GPU from "
        "NVML, CPU and RAM from CodeCarbon); generate J is the generate window's total. "
        "cross_check_rel is n/a where the window was too short for greenbench to judge it.",
        "",
        "| model | precision | status | fit s | fit J | fit GPU J | fit reliable | fit "
        "cross_check_rel | generate J per 1k images | KID | point process s |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in entry["rows"]:
        status = r["status"] + (f": {r['reason']}" if r.get("reason") else "")
        if "fit_s" not in r:  # a point without a record
            lines.append(f"| {r['model']} | {r['precision']} | {status} |" + " n/a |" * 8)
            continue
        reliable = ("n/a" if r["fit_reliable"] is None else "yes" if r["fit_reliable"]
                    else f"no: {r['fit_reliability_reason']}")
        lines.append(
            f"| {r['model']} | {r['precision']} | {status} | {num(r['fit_s'], 2)} | "
            f"{num(r['fit_j'], 1)} | {num(r['fit_gpu_j'], 1)} | {reliable} | "
            f"{pct(r['fit_cross_check_rel'], 2)} | {num(r['generate_j_per_1k'], 2)} | "
            f"{num(r['kid'], 4)} | {num(r['process_s'], 1)} |")
    return lines
