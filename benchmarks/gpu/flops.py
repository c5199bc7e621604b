"""The ``flops`` section: the width-1 GAN's achieved FLOP per joule in the precision sweep (its
``flops_per_step`` times training batches over the fit window's GPU joules), per precision,
against the device's published dense peak at its NVML board power limit."""

from __future__ import annotations

from typing import Any

from benchmarks.gpu.common import Context, num, pct, text
from benchmarks.gpu.precisions import PRECISIONS

# Dense peak TFLOP/s by dtype from NVIDIA's data sheets. The sheets give tensor-core rates
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
# The device names CUDA gives these parts, exactly (compared without regard to case or runs
# of spaces). Anything else has no peak here: an H100 NVL, an H200 NVL, a GH200 ("NVIDIA GH200
# 480GB"), whose name contains "H200" but which is another part, with another power limit.
DEVICE_NAMES = {
    "nvidia h100 80gb hbm3": "H100 SXM",
    "nvidia h100 pcie": "H100 PCIe",
    "nvidia h200": "H200",
}
# The dtype whose peak bounds a precision. 32-true: the reference models are convolutional, and
# cuDNN runs float32 convolutions in TF32 unless torch.backends.cudnn.allow_tf32 is off.
PEAK_DTYPE = {"16-mixed": "fp16", "16-true": "fp16", "bf16-mixed": "bf16", "bf16-true": "bf16"}
MIN_GPU_PERIODS = 10  # a fit window shorter than this many NVML periods gets a note


def peak_for(gpu_name: str | None) -> str | None:
    """The ``PEAK_TFLOPS`` entry for a device name as CUDA gives it, matched exactly; None when
    the table has no such part."""
    return DEVICE_NAMES.get(" ".join((gpu_name or "").lower().split()))


def check(ctx: Context) -> dict[str, Any]:
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
               fit_s=None if fit.get("duration_s") is None else round(fit["duration_s"], 2))
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


def render(entry: dict[str, Any]) -> list[str]:
    peak = entry["peak_tflops"]
    if entry["peak_device"]:
        stated = (f"Peak: {entry['peak_device']}, from the {entry['peak_source']}: dense "
                  + ", ".join(f"{dtype} {num(value, 1)}" for dtype, value in peak.items())
                  + " TFLOP/s.")
    else:
        stated = (f"Peak: unknown for {text(entry['gpu_name'])} (the table holds "
                  f"{entry['known_devices']} only).")
    lines = [
        "The width-1 GAN of the precision sweep: FLOPs are `flops_per_step` (one training "
        "step, both networks forward and backward, counted by `FlopCounterMode`) times training "
        "batches (the record's `optimizer_steps` counts both optimizers' steps, twice the "
        "batches); joules are the fit window's GPU energy (warm-up and train).",
        "",
        stated + f" Board power limit: {num(entry['power_limit_w'], 1)} W (NVML, enforced); "
        "peak GFLOP/J is the peak over that limit. 32-true is held to TF32 when cuDNN may use "
        "it for float32 convolutions (the default), else FP32.",
        "",
        "| precision | status | GFLOP per step | batches | fit s | fit GPU J | TFLOP/s | "
        "GFLOP/J | peak dtype | peak TFLOP/s | peak GFLOP/J | share of peak GFLOP/J | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in entry["rows"]:
        lines.append(
            f"| {r['precision']} | {r['status']} | {num(r['gflop_per_step'], 3)} | "
            f"{num(r['batches'], 0)} | {num(r['fit_s'], 2)} | {num(r['fit_gpu_j'], 1)} | "
            f"{num(r['tflops'], 3)} | {num(r['gflop_per_j'], 2)} | {r['peak_dtype']} | "
            f"{num(r['peak_tflops'], 1)} | {num(r['peak_gflop_per_j'], 1)} | "
            f"{pct(r['share_of_peak'], 3)} | {text(r['reason'], '')} |")
    return lines
