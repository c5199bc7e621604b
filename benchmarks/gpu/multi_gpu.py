"""The ``multigpu`` section: a point on one GPU against the same point on two (``trainer:
{devices: 2, strategy: ddp}``), as real sweep points. Per point, what the record says: the
training energy and time, the GPU part, each device's joules (every rank's GPU counted once,
from rank 0), samples over all ranks and J per 1,000 of them, and whether a GPU was not the
point's alone. On a machine with fewer than two GPUs it does not run, and says so."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.gpu.common import Context, Settings, num, rounded, text
from benchmarks.gpu.precisions import BATCH_SIZE, ENERGY, IMAGE_SIZE, WIDTH
from benchmarks.sweep_runs import run_sweep

DEVICES = (1, 2)


def multi_gpu_sweep(settings: Settings) -> dict[str, Any]:
    """The sweep file the section runs: the VAE at bf16-mixed on one GPU and on two."""
    return {
        "name": "gpu-validation-multigpu",
        "description": "the VAE on one GPU and on two (DDP), a short step budget",
        "dataset": {"name": "digits", "image_size": IMAGE_SIZE},
        "model": "vae",
        "precision": "bf16-mixed",
        "train": {"steps": settings.steps},
        "energy": dict(ENERGY),
        "batch_size": BATCH_SIZE,
        "width": WIDTH,
        "trainer": {"accelerator": "gpu", "strategy": "ddp"},
        "grid": {"trainer.devices": list(DEVICES)},
    }


def check(ctx: Context) -> dict[str, Any]:
    import torch

    gpus = torch.cuda.device_count()
    if gpus < 2:
        return {"status": "skipped",
                "reason": f"needs two or more GPUs; this machine shows {gpus}"}
    with tempfile.TemporaryDirectory(prefix="greenbench-gv-") as tmp:
        done = run_sweep(multi_gpu_sweep(ctx.settings), Path(tmp), ctx.time_limit_s - 35)
    if done.returncode == 2:
        raise RuntimeError("greenbench run refused the generated sweep (exit 2); see its output")
    rows = sorted((point_row(record) for record in done.records),
                  key=lambda row: row["world_size"] or 0)
    return {"rows": rows, "gpus": gpus, "wall_s": round(done.wall_s, 1),
            "exit_code": done.returncode, "stopped": done.stopped, "steps": ctx.settings.steps}


def point_row(record: dict[str, Any]) -> dict[str, Any]:
    """One point, only as its record says it."""
    windows = (record.get("energy") or {}).get("windows") or {}
    fit, train = windows.get("fit") or {}, windows.get("train") or {}
    gpu = (fit.get("components") or {}).get("gpu") or {}
    meters = (record.get("energy") or {}).get("meters") or {}
    devices = (meters.get("NvmlMeter") or {}).get("devices") or []
    return {
        "world_size": (record.get("train") or {}).get("world_size"),
        "status": record["status"], "reason": record.get("reason"),
        "fit_s": rounded(fit.get("duration_s"), 2), "fit_j": rounded(fit.get("total_j"), 1),
        "fit_gpu_j": rounded(gpu.get("joules"), 1), "gpu_scope": gpu.get("scope"),
        "device_j": [rounded(d.get("energy_j"), 1) for d in devices],
        "samples": (record.get("train") or {}).get("samples_seen"),
        "j_per_1k_samples": rounded(train.get("j_per_1k_samples"), 2),
    }


def render(entry: dict[str, Any]) -> list[str]:
    lines = [
        f"`greenbench run` on a generated sweep: the VAE at bf16-mixed, "
        f"{num(entry['steps'], 0)} training batches per rank, on 1 and on 2 of the "
        f"{num(entry['gpus'], 0)} GPUs (DDP); {num(entry['wall_s'], 1)} s for the sweep"
        + (", stopped at its time limit." if entry.get("stopped") else "."),
        "",
        "| devices | status | fit (s) | fit (J) | GPU part (J) | each GPU (J), whole run | "
        "samples | J per 1k samples (train) | GPU scope |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in entry["rows"]:
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {text(r['reason'])}"
        each = ", ".join(num(j, 1) for j in r["device_j"]) or "-"
        lines.append(
            f"| {num(r['world_size'], 0)} | {status} | {num(r['fit_s'], 2)} | "
            f"{num(r['fit_j'], 1)} | {num(r['fit_gpu_j'], 1)} | {each} | "
            f"{num(r['samples'], 0)} | {num(r['j_per_1k_samples'], 2)} | "
            f"{text(r['gpu_scope'], 'own')} |")
    return lines
