"""One point of a sweep, end to end: data, model, Trainer, training, sampling, the record.

``run_point`` is what a child process calls. It never raises for a problem with the point
itself: an exception becomes a ``failed`` record carrying the exception's last line (the full
traceback goes to the process's output, which the parent keeps as the point's log), a precision
the accelerator cannot run becomes ``skipped``, a loss that turns NaN or infinite becomes
``diverged``. Energy is measured by an ``EnergyCallback`` on the Trainer (sampling runs in its
``eval`` window), FLOPs per step by ``StepFlops``; CodeCarbon's own CSV comes back as files. It
never writes the results store; it returns the record and the files to store.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything
from torch.utils.data import DataLoader, TensorDataset

from greenbench import data, environment
from greenbench.energy.callback import EnergyCallback
from greenbench.energy.carbon import resolve_intensity
from greenbench.energy.monitor import MIN_WINDOW_PERIODS
from greenbench.models import build_model
from greenbench.point import generation
from greenbench.point.curve import QualityCurve, best_point, energy_to_quality
from greenbench.point.flops import StepFlops
from greenbench.point.images import grid_png
from greenbench.point.training import TrainingMonitor
from greenbench.quality.evaluate import EvalData, EvalSettings, evaluate
from greenbench.quality.extractor import ACCURACY_FLOOR, Extractor, load_or_build
from greenbench.records import (
    DIVERGED,
    FAILED,
    GENERATE_DEFAULTS,
    OK,
    SKIPPED,
    PointResult,
    RunSpec,
    finish,
    last_line,
    new_record,
)

SAMPLE_GRID = 64  # of the final evaluation's samples, saved as samples/<run_id>.png


def run_point(spec: RunSpec) -> PointResult:
    """Train and sample one point; always returns a finished record."""
    result = PointResult(new_record(spec.run_id, spec.sweep, spec.config))
    try:
        with tempfile.TemporaryDirectory(prefix="greenbench-codecarbon-") as codecarbon_dir:
            status, reason = _run(spec, result, codecarbon_dir)
    except Exception as error:  # any failure of the point is its outcome, recorded
        traceback.print_exc()
        status, reason = FAILED, last_line(error)
    if result.record["environment"] is None:
        result.record["environment"] = environment.describe()
    finish(result.record, status, reason)
    return result


def _run(spec: RunSpec, result: PointResult, codecarbon_dir: str) -> tuple[str, str | None]:
    config, record, timings = spec.config, result.record, result.record["timings"]
    started = time.perf_counter()
    seed_everything(config["seed"], verbose=False)
    images = data.load_dataset(config["dataset"], spec.dataset_root, config["image_size"])
    loader, train_images, record["data"] = _training_data(spec, images)
    model = build_model(
        config["model"], image_size=config["image_size"], channels=record["data"]["channels"],
        width=config["width"], latent_dim=config["latent_dim"], lr=config["lr"],
    )
    monitor = TrainingMonitor(max_batches=config["steps"])
    energy = _energy_callback(spec, codecarbon_dir)
    flops = StepFlops()
    scorer = _Scorer(EvalData(images.test_images, train_images), config)
    curve = QualityCurve(scorer, energy, config["eval"]["every_n_epochs"])
    trainer = _trainer(config, [monitor, energy, flops, curve])
    device = trainer.strategy.root_device
    record["environment"] = environment.describe(
        device.type, torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    timings["setup_s"] = _since(started)

    unavailable = precision_unavailable(config["precision"], trainer.precision, device)
    if unavailable:
        return SKIPPED, unavailable

    started = time.perf_counter()
    extractor, withheld = _extractor(config, images)
    scorer.extractor = None if withheld else extractor  # withheld: no feature-space metrics
    timings["extractor_s"] = _since(started)

    started = time.perf_counter()
    generated: dict[str, Any] | None = None
    try:
        trainer.fit(model, loader)
        timings["train_s"] = _since(started)
        record["train"] = {
            "batches": monitor.batches,
            "optimizer_steps": trainer.global_step,
            "samples_seen": monitor.samples,
            "final_losses": monitor.final_losses(),
        }
        record["flops_per_step"] = flops.flops_per_step
        if monitor.diverged:
            return DIVERGED, monitor.divergence

        final = curve.points[-1] if curve.points else None
        if final is None or final["step"] != trainer.global_step:
            final = curve.add(model, curve.epochs_ended, trainer.global_step)
        timings["eval_s"] = round(curve.seconds, 3)  # every scoring, during fit and after
        if not torch.isfinite(scorer.samples).all():
            return DIVERGED, "generated samples are not finite after training"
        result.files[f"samples/{spec.run_id}.png"] = grid_png(scorer.samples[:SAMPLE_GRID])
        record["quality"] = _quality(final, curve, extractor, withheld, config)
        record["quality_curve"] = curve.record()
        settings = {**GENERATE_DEFAULTS, **spec.generate}
        if settings["num_images"] and hasattr(model, "sample"):
            generated = generation.generate(model, trainer, energy, **settings)
        return OK, None
    finally:
        if energy.monitor is not None:  # fit started: whatever it measured is kept
            record["energy"], record["carbon"] = energy.result(), energy.carbon()
            if generated is not None:
                record["generation"] = generation.summarise(
                    generated, record["energy"]["windows"]["generate"])
            for kind, path in energy.codecarbon_csv_files().items():
                suffix = "" if kind == "run" else f".{kind}"
                result.files[f"codecarbon/{spec.run_id}{suffix}.csv"] = path.read_bytes()


class _Scorer:
    """Scores a model with the point's settings and keeps the samples of the latest call."""

    def __init__(self, eval_data: EvalData, config: dict[str, Any]):
        self.eval_data = eval_data
        self.settings = EvalSettings(
            num_samples=config["eval"]["num_samples"],
            importance_samples=config["eval"]["importance_samples"],
            seed=config["seed"],
        )
        self.extractor: Extractor | None = None
        self.samples = torch.empty(0)

    def __call__(self, model: torch.nn.Module) -> dict[str, Any]:
        scores, self.samples = evaluate(model, self.eval_data, self.extractor, self.settings)
        return scores


def _extractor(config: dict[str, Any], images: data.ImageData) -> tuple[Extractor, str | None]:
    """The pinned feature extractor, and why its metrics are withheld (accuracy too low)."""
    extractor = load_or_build(config["dataset"], config["image_size"], images)
    floor = config["eval"]["min_extractor_accuracy"]
    floor = floor if floor is not None else ACCURACY_FLOOR.get(config["dataset"])
    if floor is not None and extractor.accuracy < floor:
        return extractor, (
            f"feature-space metrics withheld: extractor {extractor.id} has test accuracy "
            f"{extractor.accuracy:.3f}, below the floor {floor}"
        )
    return extractor, None


def _quality(
    final: dict[str, Any], curve: QualityCurve, extractor: Extractor, withheld: str | None,
    config: dict[str, Any],
) -> dict[str, Any]:
    best = best_point(curve.points)
    return {
        "final": {"epoch": final["epoch"], **final["scores"]},
        "best": {"epoch": best["epoch"], **best["scores"]} if best else None,
        "extractor": extractor.record(),
        "withheld": withheld,
        "energy_to_quality_j": energy_to_quality(curve.points, config["eval"]["target_kid"]),
    }


def _training_data(
    spec: RunSpec, images: data.ImageData
) -> tuple[DataLoader, torch.Tensor, dict[str, Any]]:
    config = spec.config
    keep = data.fraction_indices(
        images.train_labels.numpy(), config["data_fraction"], config["seed"]
    )
    keep = torch.from_numpy(keep)
    loader = DataLoader(
        TensorDataset(images.train_images[keep], images.train_labels[keep]),
        batch_size=config["batch_size"],
        shuffle=True,
        drop_last=True,  # BatchNorm and a fair per-step cost both want full batches
        generator=torch.Generator().manual_seed(config["seed"]),
    )
    summary = {
        "root": spec.dataset_root,
        "train_images": len(keep),
        "train_split_images": len(images.train_labels),
        "test_images": len(images.test_labels),
        "channels": images.train_images.shape[1],
        "image_size": images.train_images.shape[-1],
    }
    return loader, images.train_images[keep], summary


def _energy_callback(spec: RunSpec, codecarbon_dir: str) -> EnergyCallback:
    energy = spec.energy
    return EnergyCallback(
        idle_seconds=energy["idle_seconds"],
        warmup_steps=energy["warmup_steps"],
        sample_hz=energy["sample_hz"],
        min_window_periods=energy.get("min_window_periods", MIN_WINDOW_PERIODS),
        cooldown_s=energy.get("cooldown_s", 0.0),
        # set by the executor: the sweep's first temperature, its latest idle baseline here
        reference_temperature_c=energy.get("reference_temperature_c"),
        baseline=energy.get("baseline"),
        carbon=resolve_intensity(**spec.carbon),
        codecarbon_dir=codecarbon_dir,
        project_name=f"greenbench {spec.sweep} {spec.run_id}",
    )


def _trainer(config: dict[str, Any], callbacks: list) -> Trainer:
    return Trainer(
        accelerator="auto",
        devices=1,
        precision=config["precision"],
        max_epochs=config["epochs"] or -1,  # a steps budget: the monitor stops fit
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tempfile.gettempdir(),
    )


def precision_unavailable(requested: str, resolved: str, device: torch.device) -> str | None:
    """Why ``requested`` cannot run as asked on ``device``, or None when it can.

    Lightning replaces some precisions silently (``16-mixed`` on a CPU runs as ``bf16-mixed``);
    a record must never carry a precision that did not run, so such a point is skipped.
    """
    if resolved != requested:
        return (f"{requested} cannot run on {device.type}: Lightning would run {resolved} "
                "instead")
    if device.type == "cuda" and "bf16" in requested and not torch.cuda.is_bf16_supported():
        return f"{requested} needs bfloat16, which {torch.cuda.get_device_name(device)} lacks"
    return None


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)
