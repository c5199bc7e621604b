"""What only a GPU can check, in one command and under 8 minutes: a report per GPU model.

On one NVIDIA GPU this runs five sections, each timed, each catching its own failure, and writes
``reports/gpu-validation-<gpu name, slugified>.md`` (and the same result as ``.json``):

* ``nvml``: NVML's energy counter against the integral of its sampled power (``cross_check_rel``)
  and the counter's measured update period, with ``NvmlMeter`` directly, on an idle window, a
  short window of matrix products and a long one;
* ``overhead``: what ``EnergyCallback`` (NVML and CodeCarbon) adds to a training step on the GPU,
  A/B alternated in one run with a control arm, as in ``overhead.py``: the median ratio;
* ``precisions``: every precision on CUDA (32-true, 16-mixed, bf16-mixed, 16-true, bf16-true) for
  the GAN and the VAE on 32x32 digits, as real sweep points (``greenbench run`` on a generated
  sweep file): fit-window energy, generation energy per 1k images, time, KID and status;
* ``flops``: the width-1 GAN's achieved FLOP per joule (its ``flops_per_step`` times training
  batches over the fit window's GPU joules), per precision, against the device's published dense
  peak at its NVML board power limit;
* ``quickstart``: the wall time of ``greenbench run sweeps/quickstart.yaml`` from a cold start.

Where no CUDA GPU is present it refuses in one line and exits 2. A section that fails, is skipped
or would not fit in the time left says so in the report ("not run: <reason>"): no figure is ever
invented. Exit 1 when a section failed, else 0. Everything but the sections' GPU work (arguments,
the section registry, the report, the slug, the refusal) is tested on a CPU in
``tests/test_gpu_validation.py``.

    python benchmarks/gpu_validation.py                  # reports/gpu-validation-<gpu>.md
    python benchmarks/gpu_validation.py --quick --out /tmp/gv --skip quickstart
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

# -- settings -----------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
QUICKSTART = ROOT / "sweeps" / "quickstart.yaml"
BUDGET_S = 480.0  # the whole command, every section included
DEVICE = 0  # the CUDA device measured (as torch numbers devices)


@dataclass(frozen=True)
class Settings:
    mode: str
    idle_s: float  # nvml: the idle window
    short_s: float  # nvml: the short window of matrix products
    long_s: float  # nvml: the long window
    overhead_rounds: int  # overhead: A/B/C rounds (fewer if its share of the budget runs out)
    steps: int  # precisions: training batches per point


FULL = Settings("full", idle_s=5.0, short_s=1.0, long_s=30.0, overhead_rounds=10, steps=500)
QUICK = Settings("quick", idle_s=2.0, short_s=1.0, long_s=10.0, overhead_rounds=3, steps=100)

# nvml: sampled power at the EnergyCallback's default rate, beside the counter; square matrix
# products in bf16 (fp16 where the GPU has no bf16), synchronised every ~50 ms of work.
SAMPLE_HZ = 10.0
MATMUL_N = 8192
CHUNK_S = 0.05
CROSS_CHECK_WARN = 0.05  # greenbench.energy.monitor warns above this gap

# overhead: the reference GAN, as overhead.py has it, at the GPU sweep's image and batch size
OVERHEAD_MODEL, OVERHEAD_WIDTH, OVERHEAD_PRECISION = "gan", 1.0, "32-true"
OVERHEAD_BATCHES, OVERHEAD_TIMED_FROM = 300, 50  # per arm; batches before TIMED_FROM are warm-up
OVERHEAD_MIN_ROUNDS = 3
OVERHEAD_TARGET = 1.01  # the target overhead.py holds a CPU to

# precisions: one sweep of both models at every precision greenbench runs on CUDA
MODELS = ("gan", "vae")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
IMAGE_SIZE, BATCH_SIZE, WIDTH = 32, 128, 1.0
PRECISION_ENERGY = {"idle_seconds": 2.0, "warmup_steps": 20, "sample_hz": SAMPLE_HZ}

# flops: dense peak TFLOP/s by dtype from NVIDIA's data sheets. The sheets give tensor-core rates
# "with sparsity"; dense is half of that. FP32 is the plain (non-tensor-core) rate.
PEAK_TFLOPS = {
    "H100 SXM": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5},
    "H200": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
}
PEAK_SOURCE = {
    "H100 SXM": "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column (tensor-core rates "
                "with sparsity, halved)",
    "H100 PCIe": "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe column (tensor-core rates "
                 "with sparsity, halved)",
    "H200": "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column (tensor-core rates with "
            "sparsity, halved)",
}
# The dtype whose peak bounds a precision. 32-true: the reference models are convolutional, and
# cuDNN runs float32 convolutions in TF32 unless torch.backends.cudnn.allow_tf32 is off.
PEAK_DTYPE = {"16-mixed": "fp16", "16-true": "fp16", "bf16-mixed": "bf16", "bf16-true": "bf16"}
MIN_GPU_PERIODS = 10  # a fit window shorter than this many NVML periods gets a note

QUICKSTART_TARGET_S = 180.0  # quickstart_runtime.py's target, on a 2-core CPU


# -- the run's shared state ---------------------------------------------------------------

@dataclass
class Context:
    """What the sections share: the settings, the clock, the GPU, and what earlier sections
    left for later ones (the precision sweep's records, for ``flops``)."""

    settings: Settings
    started: float
    time_limit_s: float = BUDGET_S  # how long the running section may take
    gpu_name: str | None = None
    power_limit_w: float | None = None
    cudnn_tf32: bool | None = None
    records: list[dict] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


# -- nvml: the energy counter against sampled power ---------------------------------------

def check_nvml(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    load = MatmulLoad()
    rows = [nvml_window("idle", s.idle_s, None)]  # before any matrix product ran
    load.calibrate()
    rows.append(nvml_window("short", s.short_s, load))
    rows.append(nvml_window("long", s.long_s, load))
    load.release()
    return {"rows": rows, "sample_hz": SAMPLE_HZ, "matmul_n": MATMUL_N,
            "matmul_dtype": load.dtype_name, "warn_above": CROSS_CHECK_WARN}


class MatmulLoad:
    """Square matrix products on the GPU, synchronised every ~CHUNK_S of work, so that a
    window's host clock brackets the device's work."""

    def __init__(self) -> None:
        import torch

        self.torch, self.device = torch, torch.device("cuda", DEVICE)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.dtype_name = str(dtype).removeprefix("torch.")
        self.a, self.b = (torch.randn(MATMUL_N, MATMUL_N, device=self.device, dtype=dtype)
                          for _ in range(2))
        self.c = torch.empty_like(self.a)
        self.chunk = 1
        torch.cuda.synchronize(self.device)

    def products(self, count: int) -> None:
        for _ in range(count):
            self.torch.matmul(self.a, self.b, out=self.c)
        self.torch.cuda.synchronize(self.device)

    def calibrate(self) -> None:
        self.products(3)  # warm-up: cuBLAS handle, kernel selection, clocks
        began = time.perf_counter()
        self.products(10)
        self.chunk = max(1, round(CHUNK_S / ((time.perf_counter() - began) / 10)))

    def run_for(self, seconds: float) -> int:
        """Products until ``seconds`` have passed (to within one chunk); how many ran."""
        began, done = time.perf_counter(), 0
        while time.perf_counter() - began < seconds:
            self.products(self.chunk)
            done += self.chunk
        return done

    def release(self) -> None:
        del self.a, self.b, self.c
        self.torch.cuda.empty_cache()


def nvml_window(name: str, seconds: float, load: MatmulLoad | None) -> dict[str, Any]:
    """One window measured by a fresh ``NvmlMeter``: idle (``load`` None) or busy. The device
    is idle at its start: ``MatmulLoad`` synchronises after all it does."""
    from greenbench.energy.nvml import NvmlMeter

    meter = NvmlMeter([DEVICE], sample_hz=SAMPLE_HZ)
    meter.start()  # times the counter's update period (up to 0.5 s), then counts
    try:
        details = meter.details()
        if details["unavailable"]:
            raise RuntimeError(f"NVML cannot measure cuda:{DEVICE}: {details['unavailable']}")
        before, began = meter.read()["gpu"], time.perf_counter()
        if load is None:
            products = 0
            time.sleep(seconds)
        else:
            products = load.run_for(seconds)
        after, duration = meter.read()["gpu"], time.perf_counter() - began
        state = next(iter((meter.telemetry() or {None: {}}).values()))
        dev = meter.details()["devices"][0]  # after the window: a cross-check may have ended
    finally:
        meter.stop()
    counter_j = after.joules - before.joules
    sampled_j = (after.cross_check_j - before.cross_check_j
                 if after.cross_check_j is not None and before.cross_check_j is not None
                 else None)
    faults = after.faults - before.faults
    notes = [f"{faults} meter fault(s): {after.fault}"] if faults else []
    if dev["source"] != "nvml_energy_counter":
        notes.append(f"no energy counter ({dev['counter_error']}): joules are sampled power")
    elif sampled_j is None:
        notes.append(f"no cross-check: {dev['cross_check_fault']}")
    return {
        "window": name, "seconds": round(duration, 3), "source": after.source,
        "counter_j": round(counter_j, 3), "sampled_j": _round(sampled_j, 3),
        "mean_w": round(counter_j / duration, 1),
        "cross_check_rel": (_round(abs(sampled_j - counter_j) / counter_j, 5)
                            if sampled_j is not None and counter_j > 0 else None),
        "period_s": _round(dev["period_s"], 4), "period_basis": dev["period_basis"],
        "matmul_tflops": (round(2 * MATMUL_N**3 * products / duration / 1e12, 1)
                          if load is not None else None),
        "sm_clock_mhz": state.get("sm_clock_mhz"), "temperature_c": state.get("temperature_c"),
        "pstate": state.get("pstate"), "faults": faults, "note": "; ".join(notes) or None,
    }


# -- overhead: EnergyCallback on the GPU, A/B alternated ------------------------------------

def check_overhead(ctx: Context) -> dict[str, Any]:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from greenbench.data import load_dataset
    from greenbench.energy.callback import EnergyCallback
    from greenbench.models import build_model

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    deadline = time.perf_counter() + ctx.time_limit_s
    train = load_dataset("digits", None, IMAGE_SIZE).train_images
    images = train.repeat(OVERHEAD_BATCHES * BATCH_SIZE // len(train) + 1, 1, 1, 1)
    device = torch.device("cuda", DEVICE)

    class StepTimer(L.Callback):
        """Seconds per step from batch TIMED_FROM to the last, the device synchronised at those
        two edges only: on a GPU the host runs ahead, so per-step host times would measure the
        launch queue rather than the steps."""

        def __init__(self) -> None:
            self.began = self.ended = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == OVERHEAD_TIMED_FROM:
                torch.cuda.synchronize(device)
                self.began = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == OVERHEAD_BATCHES - 1:
                torch.cuda.synchronize(device)
                self.ended = time.perf_counter()

    def seconds_per_step(with_callback: bool) -> float:
        L.seed_everything(0, verbose=False)
        model = build_model(OVERHEAD_MODEL, image_size=IMAGE_SIZE, channels=1,
                            width=OVERHEAD_WIDTH, latent_dim=32, lr=2e-4)
        data = DataLoader(TensorDataset(images, torch.zeros(len(images))),
                          batch_size=BATCH_SIZE, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(0))
        timer = StepTimer()
        with tempfile.TemporaryDirectory(prefix="greenbench-gv-cc-") as codecarbon_dir:
            energy = [EnergyCallback(idle_seconds=0, codecarbon_dir=codecarbon_dir)] \
                if with_callback else []
            trainer = L.Trainer(
                accelerator="gpu", devices=[DEVICE], precision=OVERHEAD_PRECISION,
                max_epochs=1, limit_train_batches=OVERHEAD_BATCHES, callbacks=[timer, *energy],
                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False,
            )
            trainer.fit(model, data)
            if energy:
                energy[0].result()  # stop the meters before the next arm
        if not timer.ended > timer.began > 0:
            raise RuntimeError(f"an arm ran fewer than {OVERHEAD_BATCHES} batches")
        return (timer.ended - timer.began) / (OVERHEAD_BATCHES - OVERHEAD_TIMED_FROM)

    seconds_per_step(with_callback=True)  # warm the process, CUDA and the meters up; not counted
    arms, rounds, round_s = ("A", "B", "C"), [], 0.0
    for i in range(ctx.settings.overhead_rounds):
        if i >= OVERHEAD_MIN_ROUNDS and time.perf_counter() + round_s > deadline:
            break  # another round would overrun this section's share of the budget
        started = time.perf_counter()
        order = arms[i % 3:] + arms[:i % 3]
        timed = {arm: seconds_per_step(with_callback=arm == "B") for arm in order}
        round_s = time.perf_counter() - started
        rounds.append({"ratio": timed["B"] / ((timed["A"] + timed["C"]) / 2),
                       "control_ratio": timed["C"] / timed["A"], "a_s": timed["A"]})
        print(f"  overhead round {i + 1}: ratio {rounds[-1]['ratio']:.4f}, "
              f"control {rounds[-1]['control_ratio']:.4f}", flush=True)
    ratio = _spread([r["ratio"] for r in rounds])
    return {
        "rounds": len(rounds), "rounds_planned": ctx.settings.overhead_rounds,
        "ratio": ratio, "control_ratio": _spread([r["control_ratio"] for r in rounds]),
        "step_ms": round(1e3 * statistics.median(r["a_s"] for r in rounds), 3),
        "target": OVERHEAD_TARGET, "met": ratio["median"] <= OVERHEAD_TARGET,
        "model": OVERHEAD_MODEL, "width": OVERHEAD_WIDTH, "image_size": IMAGE_SIZE,
        "batch_size": BATCH_SIZE, "precision": OVERHEAD_PRECISION,
        "batches": OVERHEAD_BATCHES, "timed_from": OVERHEAD_TIMED_FROM,
    }


# -- precisions: every precision on CUDA, as sweep points ----------------------------------

def precision_sweep(settings: Settings) -> dict[str, Any]:
    """The sweep file the precision section runs (``output_dir`` is set when it runs)."""
    return {
        "name": "gpu-validation-precisions",
        "description": "GAN and VAE at every CUDA precision, 32x32 digits, a short step budget",
        "dataset": {"name": "digits", "image_size": IMAGE_SIZE},
        "train": {"steps": settings.steps},
        "energy": dict(PRECISION_ENERGY),
        "batch_size": BATCH_SIZE,
        "width": WIDTH,
        "grid": {"model": list(MODELS), "precision": list(PRECISIONS)},
    }


def check_precisions(ctx: Context) -> dict[str, Any]:
    sweep = precision_sweep(ctx.settings)
    with tempfile.TemporaryDirectory(prefix="greenbench-gv-") as tmp:
        returncode, wall_s, records, stopped = run_sweep(sweep, Path(tmp), ctx.time_limit_s)
    ctx.records = records
    if returncode == 2:
        raise RuntimeError("greenbench run refused the generated sweep (exit 2); see its output")
    found = {(r["config"]["model"], r["config"]["precision"]): r for r in records}
    missing = ("the sweep was stopped at its time limit" if stopped
               else f"greenbench run exited {returncode} without a record for it")
    rows = [precision_row(found[key]) if key in found else
            {"model": key[0], "precision": key[1], "status": "not run", "reason": missing}
            for key in itertools.product(MODELS, PRECISIONS)]
    return {"rows": rows, "wall_s": round(wall_s, 1), "exit_code": returncode,
            "steps": ctx.settings.steps, "batch_size": BATCH_SIZE, "image_size": IMAGE_SIZE,
            "width": WIDTH}


def run_sweep(sweep: dict[str, Any], folder: Path,
              timeout_s: float) -> tuple[int, float, list[dict], bool]:
    """``greenbench run`` on ``sweep`` in ``folder`` with an empty extractor cache, stopped (as
    Ctrl-C stops it) after ``timeout_s``; (exit code, wall seconds, its records, stopped).

    Unlike ``sweeps.run``, a point that failed keeps the others' records: the report shows every
    point's status."""
    sweep = {**sweep, "output_dir": str(folder)}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    env = {**os.environ, "GREENBENCH_CACHE": str(folder / "cache")}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "greenbench", "run", str(path)], env=env)
    stopped = False
    try:
        returncode = process.wait(timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        stopped = True
        process.terminate()  # greenbench run stops cleanly on SIGTERM, points stored
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
    wall_s = time.perf_counter() - started
    records_dir = folder / sweep["name"] / "records"
    records = [json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))]
    return returncode, wall_s, records, stopped


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
        "fit_s": _round(fit.get("duration_s"), 2), "fit_j": _round(fit.get("total_j"), 1),
        "fit_gpu_j": _round(gpu.get("joules"), 1), "gpu_source": gpu.get("source"),
        "fit_reliable": fit.get("reliable"), "fit_reliability_reason":
            fit.get("reliability_reason"),
        "fit_cross_check_rel": _round((fit.get("cross_check_rel") or {}).get("gpu"), 5),
        "generate_j_per_1k": _round(1000 * per_image if per_image is not None else None, 2),
        "kid": _round(final.get("kid"), 4),
        "process_s": _round((record.get("timings") or {}).get("process_s"), 1),
    }


# -- flops: achieved FLOP per joule against the device's peak ------------------------------

def peak_for(gpu_name: str | None) -> str | None:
    """The ``PEAK_TFLOPS`` entry for a device name as CUDA gives it, or None when the table has
    none (an H100 NVL or H200 NVL is not an SXM part, so it is None too)."""
    name = (gpu_name or "").upper()
    if "NVL" in name:
        return None
    if "H200" in name:
        return "H200"
    if "H100" in name and "PCIE" in name:
        return "H100 PCIe"
    if "H100" in name and ("SXM" in name or "HBM3" in name):  # "NVIDIA H100 80GB HBM3": SXM5
        return "H100 SXM"
    return None


def check_flops(ctx: Context) -> dict[str, Any]:
    peak = peak_for(ctx.gpu_name)
    rows = [flops_row(r, peak, ctx.power_limit_w, ctx.cudnn_tf32) for r in ctx.records
            if r["config"]["model"] == "gan" and r["config"]["width"] == 1.0]
    if not rows:
        raise RuntimeError("the precision sweep recorded no width-1 GAN point")
    rows.sort(key=lambda row: PRECISIONS.index(row["precision"])
              if row["precision"] in PRECISIONS else len(PRECISIONS))
    return {
        "rows": rows, "peak_device": peak, "peak_source": PEAK_SOURCE.get(peak),
        "peak_tflops": PEAK_TFLOPS.get(peak), "gpu_name": ctx.gpu_name,
        "power_limit_w": ctx.power_limit_w, "known_devices": ", ".join(PEAK_TFLOPS),
    }


def flops_row(record: dict[str, Any], peak: str | None, power_limit_w: float | None,
              cudnn_tf32: bool | None = True) -> dict[str, Any]:
    """Achieved FLOP/s and FLOP/J of one point, its peak and the share of it; a figure that
    cannot be had is None with ``reason``. FLOPs are ``flops_per_step`` (one training step:
    both of a GAN's networks, forward and backward) times training batches: a GAN's
    ``optimizer_steps`` counts its two optimizers' steps, twice the batches."""
    precision = record["config"]["precision"]
    dtype = PEAK_DTYPE.get(precision, "tf32" if cudnn_tf32 else "fp32")
    row: dict[str, Any] = {"precision": precision, "status": record["status"], "peak_dtype": dtype,
                           "gflop_per_step": None, "batches": None, "fit_s": None,
                           "fit_gpu_j": None, "tflops": None, "gflop_per_j": None,
                           "peak_tflops": None, "peak_gflop_per_j": None, "share_of_peak": None,
                           "reason": None}
    if peak is not None:
        row["peak_tflops"] = PEAK_TFLOPS[peak][dtype]
        if power_limit_w:
            row["peak_gflop_per_j"] = round(row["peak_tflops"] * 1e3 / power_limit_w, 1)
    flops, batches = record.get("flops_per_step"), (record.get("train") or {}).get("batches")
    fit = ((record.get("energy") or {}).get("windows") or {}).get("fit") or {}
    gpu = (fit.get("components") or {}).get("gpu") or {}
    if record["status"] != "ok":
        row["reason"] = f"{record['status']}: {record.get('reason')}"
        return row
    if not flops or not batches:
        row["reason"] = "the record has no flops_per_step or no training batches"
        return row
    row.update(gflop_per_step=round(flops / 1e9, 3), batches=batches,
               fit_s=_round(fit.get("duration_s"), 2))
    if fit.get("duration_s"):
        row["tflops"] = round(flops * batches / fit["duration_s"] / 1e12, 3)
    joules = gpu.get("joules")
    if joules is None or gpu.get("reason") or gpu.get("source") == "unavailable":
        row["reason"] = f"no GPU joules in the fit window: {gpu.get('reason') or 'unavailable'}"
        return row
    row["fit_gpu_j"] = round(joules, 1)
    row["gflop_per_j"] = round(flops * batches / joules / 1e9, 2)
    if row["peak_gflop_per_j"]:
        row["share_of_peak"] = round(row["gflop_per_j"] / row["peak_gflop_per_j"], 5)
    meters = (record.get("energy") or {}).get("meters") or {}
    period = (meters.get("NvmlMeter") or {}).get("period_s")
    if period and fit.get("duration_s", 0) < MIN_GPU_PERIODS * period:
        row["reason"] = (f"the fit window ({fit['duration_s']:.3g} s) is shorter than "
                         f"{MIN_GPU_PERIODS} periods of the GPU's energy figure ({period:.3g} s "
                         "each): a rough figure")
    return row


# -- quickstart: the wall time of the first sweep a user runs ------------------------------

def check_quickstart(ctx: Context) -> dict[str, Any]:
    from sweeps import run, training_s

    try:
        wall_s, records = run(QUICKSTART)
    except SystemExit as stop:  # sweeps.run's way of saying the sweep failed
        raise RuntimeError(str(stop)) from None
    rows = [{"model": r["config"]["model"], "precision": r["config"]["precision"],
             "width": r["config"]["width"], "status": r["status"],
             "training_s": _round(training_s(r) if r["status"] == "ok" else None, 1),
             "process_s": _round((r.get("timings") or {}).get("process_s"), 1)}
            for r in records]
    return {"wall_s": round(wall_s, 1), "points": len(records), "rows": rows,
            "target_s": QUICKSTART_TARGET_S}


# -- the section registry -----------------------------------------------------------------

@dataclass(frozen=True)
class Section:
    name: str
    title: str
    run: Callable[[Context], dict[str, Any]]
    estimate_s: dict[str, float]  # by settings mode: what it takes on an H100-class GPU
    needs: tuple[str, ...] = ()  # sections whose results it reads


SECTIONS = (
    Section("nvml", "NVML energy counter against sampled power", check_nvml,
            {"full": 50, "quick": 20}),
    Section("overhead", "EnergyCallback overhead on the GPU", check_overhead,
            {"full": 90, "quick": 35}),
    Section("precisions", "Every precision on CUDA: GAN and VAE", check_precisions,
            {"full": 160, "quick": 110}),
    Section("flops", "Achieved FLOP per joule against the peak", check_flops,
            {"full": 1, "quick": 1}, needs=("precisions",)),
    Section("quickstart", "Quickstart wall time", check_quickstart,
            {"full": 100, "quick": 100}),
)
SECTION_NAMES = tuple(s.name for s in SECTIONS)


# -- arguments, the GPU check, the machine ------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu_validation.py",
        description="Run the checks only a GPU can make; write "
                    "reports/gpu-validation-<gpu>.md. Needs one CUDA GPU (exit 2 without).")
    parser.add_argument("--out", type=Path, default=REPORTS, metavar="DIR",
                        help=f"where the report goes (default: {REPORTS})")
    parser.add_argument("--quick", action="store_true",
                        help="shorter windows, fewer rounds, fewer training steps")
    parser.add_argument("--skip", action="append", default=[], metavar="NAME[,NAME]",
                        help=f"sections not to run, of: {', '.join(SECTION_NAMES)} "
                             "(repeatable, or comma-separated)")
    args = parser.parse_args(argv)
    skip = [name.strip() for value in args.skip for name in value.split(",") if name.strip()]
    unknown = [name for name in skip if name not in SECTION_NAMES]
    if unknown:
        parser.error(f"--skip: no section {', '.join(map(repr, unknown))}; "
                     f"the sections are {', '.join(SECTION_NAMES)}")
    args.skip = list(dict.fromkeys(skip))
    return args


def gpu_missing() -> str | None:
    """Why this machine cannot run the checks (no CUDA GPU), or None when it can."""
    try:
        import torch
    except ImportError:
        return "no CUDA GPU: torch is not installed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when it finds a driver but no device
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            return f"no CUDA GPU: torch {torch.__version__} sees none"
    return None


def slugify(name: str | None) -> str:
    """A GPU name as a file-name part: lower case, runs of anything else than letters and
    digits as one '-' ("NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3")."""
    slug = re.sub(r"[^a-z0-9]+", "-", (name or "").lower()).strip("-")
    return slug or "unknown-gpu"


def describe(ctx: Context, argv: list[str]) -> dict[str, Any]:
    """The report's header: machine, GPU (torch and NVML), versions, commit. What cannot be read
    is None (the report says "unknown")."""
    import torch

    from greenbench import environment
    from greenbench.energy.nvml import NvmlMeter

    name = torch.cuda.get_device_name(DEVICE)
    env = environment.describe("cuda", name)
    props = torch.cuda.get_device_properties(DEVICE)
    gpu: dict[str, Any] = {
        "name": name, "count": torch.cuda.device_count(),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}", "driver": None, "power_limit_w": None,
        "energy_source": None, "nvml_unavailable": None,
    }
    try:
        meter = NvmlMeter([DEVICE], sample_hz=SAMPLE_HZ)
        meter.start()
        details = meter.details()
        meter.stop()
        gpu["driver"], gpu["nvml_unavailable"] = details["driver_version"], details["unavailable"]
        if details["devices"]:
            device = details["devices"][0]
            gpu["power_limit_w"], gpu["energy_source"] = device["power_limit_w"], device["source"]
    except Exception as error:  # the header is not worth failing the run for
        gpu["nvml_unavailable"] = _one_line(error)
    ctx.gpu_name, ctx.power_limit_w = name, gpu["power_limit_w"]
    ctx.cudnn_tf32 = bool(torch.backends.cudnn.allow_tf32)
    return {
        "command": " ".join(["python", "benchmarks/gpu_validation.py", *argv]),
        "mode": ctx.settings.mode, "settings": asdict(ctx.settings),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "budget_s": BUDGET_S,
        "machine": {"hostname": env["hostname"], "cpu": env["cpu"], "cores": os.cpu_count(),
                    "platform": platform.platform()},
        "gpu": gpu,
        "versions": {"python": env["python"], "torch": env["torch"],
                     "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                     "lightning": env["lightning"], "greenbench": env["greenbench"]},
        "commit": env["git_sha"], "uncommitted_changes": env["git_dirty"],
    }


# -- running ------------------------------------------------------------------------------

def run_sections(ctx: Context, skip: list[str]) -> dict[str, dict[str, Any]]:
    """Every section in order, each timed and caught; what each did, by name."""
    mode = ctx.settings.mode
    done: dict[str, dict[str, Any]] = {}
    for i, section in enumerate(SECTIONS):
        estimate = section.estimate_s[mode]
        later = sum(s.estimate_s[mode] for s in SECTIONS[i + 1:] if s.name not in skip)
        left = BUDGET_S - ctx.elapsed()
        unmet = [n for n in section.needs if done.get(n, {}).get("status") != "ok"]
        if section.name in skip:
            done[section.name] = {"status": "skipped", "reason": "skipped with --skip"}
        elif unmet:
            done[section.name] = {"status": "skipped", "reason": (
                f"needs the {', '.join(unmet)} section, which did not run to completion")}
        elif estimate > left:
            done[section.name] = {"status": "skipped", "reason": (
                f"{left:.0f} s of the {BUDGET_S:.0f} s budget left; it needs about "
                f"{estimate:.0f} s")}
        else:
            ctx.time_limit_s = max(estimate, left - later)
            print(f"[gpu-validation] {section.name}: {section.title} (about {estimate:.0f} s)",
                  flush=True)
            began = time.perf_counter()
            try:
                done[section.name] = {"status": "ok", **section.run(ctx)}
            except Exception as error:  # a section's failure is its outcome, reported
                traceback.print_exc()
                done[section.name] = {"status": "failed", "reason": _one_line(error)}
            done[section.name]["elapsed_s"] = round(time.perf_counter() - began, 1)
        entry = done[section.name]
        print(f"[gpu-validation] {section.name}: {entry['status']}"
              + (f" in {entry['elapsed_s']:.1f} s" if "elapsed_s" in entry else "")
              + (f" ({entry['reason']})" if entry.get("reason") else "")
              + f"; {ctx.elapsed():.1f} s of {BUDGET_S:.0f} s", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    missing = gpu_missing()
    if missing:
        print(f"gpu_validation: {missing}; nothing was run and no report written",
              file=sys.stderr)
        return 2
    _importable_from_checkout()
    ctx = Context(QUICK if args.quick else FULL, started=time.perf_counter())
    result = describe(ctx, argv)
    result["sections"] = run_sections(ctx, args.skip)
    result["total_s"] = round(ctx.elapsed(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / f"gpu-validation-{slugify(result['gpu']['name'])}.md"
    report.write_text(render_report(result))
    report.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    failed = [n for n, s in result["sections"].items() if s["status"] == "failed"]
    print(f"wrote {report} in {result['total_s']:.1f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _importable_from_checkout() -> None:
    """Run from a checkout where greenbench is not installed (a lent GPU machine): import it from
    ROOT, here and in the processes this starts. Also makes ``sweeps`` importable."""
    if importlib.util.find_spec("greenbench") is None:
        sys.path.insert(0, str(ROOT))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    benchmarks = str(Path(__file__).resolve().parent)
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)


# -- the report: a pure function of the result dict ---------------------------------------

def render_report(result: dict[str, Any]) -> str:
    """The Markdown report of a result dict (as ``main`` builds it, or as read back from the
    JSON). It formats what is there and computes nothing: a missing figure is "n/a" or a
    section's "not run: <reason>", never a number of its own."""
    gpu, machine, versions = result["gpu"], result["machine"], result["versions"]
    sections = result.get("sections", {})
    dirty = " with uncommitted changes" if result.get("uncommitted_changes") else ""
    lines = [
        f"# GPU validation: {_text(gpu.get('name'))}",
        "",
        f"`{result['command']}` ({result['mode']} mode), started {result['started_at']}: "
        f"{_num(result.get('total_s'), 1)} s in all, against a budget of "
        f"{_num(result['budget_s'], 0)} s.",
        "",
        f"GPU: {_text(gpu.get('name'))} ({_num(gpu.get('count'), 0)} visible, "
        f"{_num(gpu.get('memory_gib'), 1)} GiB, compute capability {_text(gpu.get('capability'))}"
        f"), driver {_text(gpu.get('driver'))}, board power limit "
        f"{_num(gpu.get('power_limit_w'), 1)} W (NVML, enforced), energy from "
        f"{_text(gpu.get('energy_source'))}"
        + (f" (NVML: {gpu['nvml_unavailable']})" if gpu.get("nvml_unavailable") else "") + ".",
        "",
        f"Machine: {_text(machine.get('cpu'))}, {_num(machine.get('cores'), 0)} cores, "
        f"{_text(machine.get('platform'))}, host {_text(machine.get('hostname'))}; Python "
        f"{_text(versions.get('python'))}, torch {_text(versions.get('torch'))} (CUDA "
        f"{_text(versions.get('cuda'))}, cuDNN {_text(versions.get('cudnn'))}), lightning "
        f"{_text(versions.get('lightning'))}, greenbench {_text(versions.get('greenbench'))}; "
        f"commit {_text(result.get('commit'))}{dirty}.",
        "",
        "| section | status | seconds |",
        "|---|---|---:|",
    ]
    for section in SECTIONS:
        entry = sections.get(section.name, {"status": "skipped", "reason": "not in the result"})
        lines.append(f"| {section.title} | {_status(entry)} | "
                     f"{_num(entry.get('elapsed_s'), 1)} |")
    for section in SECTIONS:
        entry = sections.get(section.name, {"status": "skipped", "reason": "not in the result"})
        lines += ["", f"## {section.title}", ""]
        if entry["status"] == "ok":
            lines += RENDERERS[section.name](entry)
        else:
            lines.append(f"{_status(entry)}.")
    return "\n".join(lines) + "\n"


def _render_nvml(entry: dict[str, Any]) -> list[str]:
    lines = [
        f"`NvmlMeter` on cuda, a fresh meter per window (its start times the counter's update "
        f"period); power sampled at {_num(entry['sample_hz'], 1)} Hz and integrated beside the "
        f"energy counter. Busy windows run {_num(entry['matmul_n'], 0)} x "
        f"{_num(entry['matmul_n'], 0)} {entry['matmul_dtype']} matrix products. "
        f"`cross_check_rel` is |sampled - counter| / counter; greenbench warns above "
        f"{_pct(entry['warn_above'], 0)}.",
        "",
        "| window | seconds | counter J | sampled J | mean W | cross_check_rel | counter "
        "period s | period basis | matmul TFLOP/s | SM MHz | temperature C | pstate | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for r in entry["rows"]:
        lines.append(
            f"| {r['window']} | {_num(r['seconds'], 3)} | {_num(r['counter_j'], 3)} | "
            f"{_num(r['sampled_j'], 3)} | {_num(r['mean_w'], 1)} | "
            f"{_pct(r['cross_check_rel'], 2)} | {_num(r['period_s'], 4)} | "
            f"{_text(r['period_basis'])} | {_num(r['matmul_tflops'], 1)} | "
            f"{_num(r['sm_clock_mhz'], 0)} | {_num(r['temperature_c'], 0)} | "
            f"{_text(r['pstate'])} | {_text(r['note'], '')} |")
    return lines


def _render_overhead(entry: dict[str, Any]) -> list[str]:
    ratio, control = entry["ratio"], entry["control_ratio"]
    return [
        f"Training step time with `EnergyCallback` (NVML and CodeCarbon, no idle baseline) "
        f"over without it, {_num(entry['rounds'], 0)} rounds (of "
        f"{_num(entry['rounds_planned'], 0)} planned) alternated in one run: **median ratio "
        f"{_num(ratio['median'], 4)}** (target <= {_num(entry['target'], 2)}: "
        f"{'met' if entry['met'] else 'NOT met'}).",
        "",
        "| | median | interquartile range | min | max |",
        "|---|---:|---|---:|---:|",
        f"| with / without the callback | {_spread_row(ratio)} |",
        f"| control: without / without | {_spread_row(control)} |",
        "",
        f"Setup: {entry['model']} width {_num(entry['width'], 1)}, image size "
        f"{_num(entry['image_size'], 0)}, batch {_num(entry['batch_size'], 0)}, "
        f"{entry['precision']}; {_num(entry['batches'], 0)} batches per arm, the first "
        f"{_num(entry['timed_from'], 0)} untimed, the device synchronised at the two edges of "
        f"the timed span only. A step takes {_num(entry['step_ms'], 3)} ms without the callback "
        "(median over the rounds).",
    ]


def _render_precisions(entry: dict[str, Any]) -> list[str]:
    lines = [
        f"`greenbench run` on a generated sweep: {_num(entry['steps'], 0)} training batches of "
        f"{_num(entry['batch_size'], 0)} per point, image size {_num(entry['image_size'], 0)}, "
        f"width {_num(entry['width'], 1)}; {_num(entry['wall_s'], 1)} s for the whole sweep, "
        f"exit code {_num(entry['exit_code'], 0)}. Fit J is the fit window's total (GPU from "
        "NVML, CPU and RAM from CodeCarbon); generate J is the generate window's total.",
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
            f"| {r['model']} | {r['precision']} | {status} | {_num(r['fit_s'], 2)} | "
            f"{_num(r['fit_j'], 1)} | {_num(r['fit_gpu_j'], 1)} | {reliable} | "
            f"{_pct(r['fit_cross_check_rel'], 2)} | {_num(r['generate_j_per_1k'], 2)} | "
            f"{_num(r['kid'], 4)} | {_num(r['process_s'], 1)} |")
    return lines


def _render_flops(entry: dict[str, Any]) -> list[str]:
    peak = entry["peak_tflops"]
    if entry["peak_device"]:
        stated = (f"Peak: {entry['peak_device']}, from the {entry['peak_source']}: dense "
                  + ", ".join(f"{dtype} {_num(value, 1)}" for dtype, value in peak.items())
                  + " TFLOP/s.")
    else:
        stated = (f"Peak: unknown for {_text(entry['gpu_name'])} (the table holds "
                  f"{entry['known_devices']} only).")
    lines = [
        "The width-1 GAN of the precision sweep: FLOPs are `flops_per_step` (one training "
        "step, both networks forward and backward, counted by `FlopCounterMode`) times training "
        "batches (the record's `optimizer_steps` counts both optimizers' steps, twice the "
        "batches); joules are the fit window's GPU energy (warm-up and train).",
        "",
        stated + f" Board power limit: {_num(entry['power_limit_w'], 1)} W (NVML, enforced); "
        "peak GFLOP/J is the peak over that limit. 32-true is held to TF32 when cuDNN may use "
        "it for float32 convolutions (the default), else FP32.",
        "",
        "| precision | status | GFLOP per step | batches | fit s | fit GPU J | TFLOP/s | "
        "GFLOP/J | peak dtype | peak TFLOP/s | peak GFLOP/J | share of peak GFLOP/J | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in entry["rows"]:
        lines.append(
            f"| {r['precision']} | {r['status']} | {_num(r['gflop_per_step'], 3)} | "
            f"{_num(r['batches'], 0)} | {_num(r['fit_s'], 2)} | {_num(r['fit_gpu_j'], 1)} | "
            f"{_num(r['tflops'], 3)} | {_num(r['gflop_per_j'], 2)} | {r['peak_dtype']} | "
            f"{_num(r['peak_tflops'], 1)} | {_num(r['peak_gflop_per_j'], 1)} | "
            f"{_pct(r['share_of_peak'], 3)} | {_text(r['reason'], '')} |")
    return lines


def _render_quickstart(entry: dict[str, Any]) -> list[str]:
    lines = [
        f"`greenbench run sweeps/quickstart.yaml`, {_num(entry['points'], 0)} points, from a "
        f"cold start of the command with an empty extractor cache: **{_num(entry['wall_s'], 1)}"
        f" s** (the CPU target is under {_num(entry['target_s'], 0)} s: "
        f"{'met' if entry['wall_s'] < entry['target_s'] else 'NOT met'} here).",
        "",
        "| model | precision | width | status | training s | point process s |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in entry["rows"]:
        lines.append(f"| {r['model']} | {r['precision']} | {_num(r['width'], 1)} | "
                     f"{r['status']} | {_num(r['training_s'], 1)} | {_num(r['process_s'], 1)} |")
    return lines


RENDERERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "nvml": _render_nvml, "overhead": _render_overhead, "precisions": _render_precisions,
    "flops": _render_flops, "quickstart": _render_quickstart,
}


def _status(entry: dict[str, Any]) -> str:
    if entry["status"] == "ok":
        return "ok"
    if entry["status"] == "failed":
        return f"not run: failed ({entry['reason']})"
    return f"not run: {entry['reason']}"


def _num(value: Any, digits: int) -> str:
    if value is None or isinstance(value, bool):
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def _pct(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def _text(value: Any, missing: str = "unknown") -> str:
    return missing if value is None else str(value).replace("|", "/")


def _spread_row(spread: dict[str, float]) -> str:
    return (f"{_num(spread['median'], 4)} | {_num(spread['q1'], 4)} to {_num(spread['q3'], 4)}"
            f" | {_num(spread['min'], 4)} | {_num(spread['max'], 4)}")


def _spread(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        only = values[0]
        return {"median": only, "q1": only, "q3": only, "min": only, "max": only}
    q1, median, q3 = statistics.quantiles(values, n=4)
    return {"median": median, "q1": q1, "q3": q3, "min": min(values), "max": max(values)}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1]}" if text else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
