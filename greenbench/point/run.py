"""One point of a sweep, end to end: data, model, Trainer, training, sampling, the record.

``run_point`` is what a child process calls. It never raises for a problem with the point
itself: an exception becomes a ``failed`` record carrying the exception's last line (the full
traceback goes to the process's output, which the parent keeps as the point's log), a precision
the accelerator cannot run becomes ``skipped``, a loss that turns NaN or infinite becomes
``diverged``. Energy is measured by an ``EnergyCallback`` on the Trainer (scoring runs in its
``eval`` window, sampling after training in its ``generate`` window), FLOPs per step by
``StepFlops``; CodeCarbon's own CSV comes back as files. It
never writes the results store; it returns the record and the files to store.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, seed_everything
from lightning.pytorch.utilities.model_helpers import is_overridden

from greenbench import environment
from greenbench.data.module import BuiltinDataModule
from greenbench.energy.callback import EnergyCallback
from greenbench.energy.carbon import resolve_intensity
from greenbench.energy.monitor import MIN_WINDOW_PERIODS
from greenbench.models import plugins
from greenbench.point import generation, ranks
from greenbench.point.curve import QualityCurve
from greenbench.point.flops import StepFlops
from greenbench.point.images import grid_png
from greenbench.point.pilot import PilotProbe
from greenbench.point.preparation import ScoringPreparation
from greenbench.point.rank_sync import RankSync
from greenbench.point.ranks import DONE, VALIDATE
from greenbench.point.scoring import Scorer, missing_metric, quality_record
from greenbench.point.subset import TrainingSubset
from greenbench.point.trainer import BUDGET, TARGET, checkpoint_files, make_trainer
from greenbench.point.trainer import DIVERGED as DIVERGED_BY
from greenbench.point.training import TrainingMonitor
from greenbench.records import (
    DIVERGED,
    FAILED,
    GENERATE_DEFAULTS,
    HIGHER_IS_BETTER,
    INIT_ARGS_KEYS,
    OK,
    SKIPPED,
    STOP_AT_TARGET_KEY,
    TRAINER_KEY,
    WIDTH_ARG_KEY,
    PointResult,
    RunSpec,
    finish,
    last_line,
    new_record,
    quality_settings,
)

IMAGE_GRID = 64  # of the final evaluation's samples, saved as images/<run_id>.png


def run_point(spec: RunSpec) -> PointResult:
    """Train and sample one point; always returns a finished record."""
    result = PointResult(new_record(spec.run_id, spec.sweep, spec.config))
    try:
        # the sweep file's folder stays importable while the point runs: a user's module may
        # import more of its own package lazily, in a hook or a DataLoader worker
        with tempfile.TemporaryDirectory(prefix="greenbench-point-") as scratch, \
                plugins.importable_from(spec.import_path), \
                ranks.started(spec, Path(scratch)) as others:
            try:
                status, reason = _run(spec, result, Path(scratch), others)
            except Exception:
                # a rank that failed first is the cause: rank 0's error is its peer gone
                failure = _rank_failure(others) if others is not None else None
                if failure is None:
                    raise
                traceback.print_exc()
                status, reason = FAILED, failure
    except Exception as error:  # any failure of the point is its outcome, recorded
        traceback.print_exc()
        status, reason = FAILED, last_line(error)
    if result.record["environment"] is None:
        result.record["environment"] = environment.describe()
    finish(result.record, status, reason)
    return result


def _run(spec: RunSpec, result: PointResult, scratch: Path, others: ranks.Ranks | None
         ) -> tuple[str, str | None]:
    config, record, timings = spec.config, result.record, result.record["timings"]
    quality = quality_settings(config)
    started = time.perf_counter()
    # As plain Lightning would: seed, the data module, the model, then fit with the data module.
    seed_everything(config["seed"], verbose=False)
    datamodule, record["data"] = _data_module(spec)
    model_class, init_args = _model_class(config, datamodule)
    model = model_class(**init_args)
    record["model"] = {"class_path": _dotted(model_class), "init_args": init_args,
                       "source_sha256": plugins.source_sha256(model_class)}
    subset = TrainingSubset(datamodule, config["data_fraction"], config["seed"])
    has_val_data = is_overridden("val_dataloader", datamodule, LightningDataModule)
    validates = has_val_data and is_overridden("validation_step", model, LightningModule)
    generative = plugins.is_generative(model_class)
    monitor = TrainingMonitor(max_batches=config["steps"])
    (scratch / "codecarbon").mkdir()
    energy = _energy_callback(spec, scratch / "codecarbon", others)
    flops = StepFlops()
    scorer = Scorer(config) if generative else None
    own_metric = quality["metric"] not in HIGHER_IS_BETTER  # one the module logs
    curve = QualityCurve(scorer, energy, config["eval"]["every_n_epochs"], quality["metric"],
                         from_training=own_metric and not validates, mode=quality["mode"],
                         target=quality["target"],
                         stop_at_target=bool(config.get(STOP_AT_TARGET_KEY)))
    preparation = ScoringPreparation(scorer, subset, has_val_data, timings)
    probe = PilotProbe(energy, spec.pilot.get("batches")) if spec.pilot is not None else None
    sync = RankSync(energy.warmup_steps, monitor, energy)  # the last: every rank's decisions one
    trainer, stop = make_trainer(
        config.get(TRAINER_KEY), config["precision"], config["epochs"],
        own=[monitor, energy, flops, curve, *([probe] if probe else []), sync],
        before=[preparation],
        root_dir=scratch / "trainer",
        # a pilot's loggers write a run of their own, never over its point's
        run_id=spec.run_id if spec.pilot is None else f"{spec.run_id}-pilot",
        hyperparameters=_hyperparameters(config))
    device = trainer.strategy.root_device
    record["environment"] = environment.describe(
        device.type, torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    timings["setup_s"] = _since(started)

    unavailable = precision_unavailable(config["precision"], trainer.precision, device)
    if unavailable:
        return SKIPPED, unavailable

    started = time.perf_counter()
    generated: dict[str, Any] | None = None
    try:
        trainer.fit(model, datamodule=datamodule)
        timings["trainer_fit_s"] = _since(started)
        record["data"].update(subset.describe(trainer.train_dataloader))
        if isinstance(datamodule, BuiltinDataModule):
            record["data"].update(_builtin_summary(datamodule, record["data"]))
        record["train"] = {
            "batches": monitor.batches,
            "optimizer_steps": trainer.global_step,
            "samples_seen": monitor.samples,  # every rank's
            **_parallelism(trainer, config.get(TRAINER_KEY)),
            "final_losses": monitor.final_losses(),
            **stopped(monitor, stop, by_target=curve.stopped_fit),
            "additions": [],
        }
        record["flops_per_step"] = flops.flops_per_step
        if probe is not None:
            record["pilot"] = probe.summary()
        final = curve.points[-1] if curve.points else None
        unscored = final is None or final["step"] != trainer.global_step
        # after fit, the other ranks validate with rank 0, or end
        sync.tell(VALIDATE if validates and unscored and not monitor.diverged else DONE)
        if monitor.diverged:
            return DIVERGED, monitor.divergence

        if unscored:
            logged = None
            if validates:  # after fit: the energy callback measures it as eval
                trainer.validate(model, datamodule=datamodule, verbose=False)
                logged = curve.read_logged(trainer)
                record["train"]["additions"].append(
                    "a validation after fit, measured as eval: the last epoch did not validate")
            final = curve.add(model, curve.epochs_ended, trainer.global_step, logged=logged)
        curve.complete(final, model)  # a point made by the last validation is not scored yet
        timings["eval_s"] = round(curve.seconds, 3)  # every scoring, during fit and after
        curve.read_logged(trainer)  # what was logged by the end, to name if the metric is not
        missing = missing_metric(curve, quality["metric"])
        if missing:
            return FAILED, missing
        images = scorer.image_samples if scorer is not None else None
        if images is not None:
            if not torch.isfinite(images).all():
                return DIVERGED, "generated samples are not finite after training"
            result.files[f"images/{spec.run_id}.png"] = grid_png(images[:IMAGE_GRID])
        record["quality"] = quality_record(
            final, curve, scorer.pinned if scorer else None,
            scorer.withheld if scorer else _not_a_sampler(model_class), quality)
        record["quality_curve"] = curve.record()
        settings = {**GENERATE_DEFAULTS, **spec.generate}
        if settings["num_images"] and generative:
            try:
                generated = generation.generate(model, trainer, energy, **settings)
            except Exception as error:  # costs the sampling figures, not the trained point
                traceback.print_exc()
                record["generation"] = {"error": last_line(error)}
        return OK, None
    finally:
        _collect(spec, result, energy, generated, scratch / "trainer")


def _collect(spec: RunSpec, result: PointResult, energy: EnergyCallback,
             generated: dict[str, Any] | None, trainer_dir: Path) -> None:
    """Whatever was measured and written, kept whatever the outcome: the energy windows,
    CodeCarbon's CSV and the user's checkpoints."""
    record = result.record
    if energy.monitor is not None:  # fit started: whatever it measured is kept
        record["energy"], record["carbon"] = energy.result(), energy.carbon()
        if generated is not None:
            record["generation"] = generation.summarise(
                generated, record["energy"]["windows"]["generate"])
        for kind, path in energy.codecarbon_csv_files().items():
            suffix = "" if kind == "run" else f".{kind}"
            result.files[f"codecarbon/{spec.run_id}{suffix}.csv"] = path.read_bytes()
    written = checkpoint_files(trainer_dir)
    for name, path in written.items():
        result.files[f"checkpoints/{spec.run_id}/{name}"] = path.read_bytes()
    if written and record["train"] is not None:
        record["train"]["checkpoints"] = [f"checkpoints/{spec.run_id}/{name}" for name in written]


def _rank_failure(others: ranks.Ranks, wait_s: float = 2.0) -> str | None:
    """Why a rank failed, waiting a moment for one whose peer (rank 0) already saw it go."""
    deadline = time.monotonic() + wait_s
    while (failure := others.failure()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return failure


def stopped(monitor: TrainingMonitor, stop: dict[str, Any], by_target: bool = False
            ) -> dict[str, Any]:
    """Who ended fit, and when: ``train.stopped_by`` (a callback's class name, ``budget``,
    ``diverged``, ``target`` when the quality curve stopped it at the quality target
    (``by_target``), or ``LightningModule`` for the module's own ``should_stop``) and
    ``train.stopped_at`` (the epoch, counted from 0 as Lightning counts, and the training
    batches done)."""
    ended = {"epoch": monitor.epoch, "batches": monitor.batches}
    if monitor.diverged:
        return {"stopped_by": DIVERGED_BY, "stopped_at": ended}
    if monitor.max_batches is not None and monitor.batches >= monitor.max_batches:
        return {"stopped_by": BUDGET, "stopped_at": ended}
    if stop["by"] is not None:
        return {"stopped_by": TARGET if by_target else stop["by"],
                "stopped_at": {"epoch": stop["epoch"], "batches": stop["batches"]}}
    return {"stopped_by": BUDGET, "stopped_at": ended}


def follow(spec: RunSpec) -> None:
    """A rank above 0 of a point on several devices (``ranks``): the same data, model and
    Trainer as rank 0, and training alone; rank 0 measures, scores and writes the record."""
    config = spec.config
    with tempfile.TemporaryDirectory(prefix="greenbench-rank-") as scratch, \
            plugins.importable_from(spec.import_path):
        seed_everything(config["seed"], verbose=False)
        datamodule, _ = _data_module(spec)
        model_class, init_args = _model_class(config, datamodule)
        model = model_class(**init_args)
        TrainingSubset(datamodule, config["data_fraction"], config["seed"])
        monitor = TrainingMonitor(max_batches=config["steps"])
        sync = RankSync(spec.energy["warmup_steps"], monitor)
        trainer, _ = make_trainer(config.get(TRAINER_KEY), config["precision"], config["epochs"],
                                  own=[monitor, sync], before=[],
                                  root_dir=Path(scratch) / "trainer", run_id=spec.run_id,
                                  hyperparameters={})
        trainer.fit(model, datamodule=datamodule)
        if sync.told() == VALIDATE:
            trainer.validate(model, datamodule=datamodule, verbose=False)


def _parallelism(trainer: Any, section: dict[str, Any] | None) -> dict[str, Any]:
    """How many processes trained, with which strategy, on which devices (rank by rank: the
    index, and for a GPU its UUID and name)."""
    devices = getattr(trainer.strategy, "parallel_devices", None) or \
        [trainer.strategy.root_device]
    described = []
    for rank, device in enumerate(devices):
        entry = {"rank": rank, "type": device.type, "index": device.index}
        if device.type == "cuda":
            properties = torch.cuda.get_device_properties(device)
            entry.update(uuid=str(getattr(properties, "uuid", "") or "") or None,
                         name=properties.name)
        described.append(entry)
    requested = (section or {}).get("strategy", "auto")
    return {"world_size": trainer.world_size, "strategy": requested,
            "strategy_run": type(trainer.strategy).__name__, "devices": described}


def _not_a_sampler(model_class: type) -> str | None:
    """The note on a module whose ``sample`` is not ``sample(n)``: it is not scored."""
    if not callable(getattr(model_class, "sample", None)):
        return None
    return f"not sampled or scored: {plugins.sampler_problem(model_class)}"


def _hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The point's configuration as a logger's hyperparameters (nested sections flattened)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": item for name, item in value.items()
                         if not isinstance(item, (dict, list))})
        elif not isinstance(value, list):
            flat[key] = value
    return flat


def _data_module(spec: RunSpec) -> tuple[LightningDataModule, dict[str, Any]]:
    """The point's data module (a built-in dataset's, or the config's class) and what the
    record says of it."""
    config = spec.config
    if INIT_ARGS_KEYS["data"] not in config:
        module = BuiltinDataModule(config["dataset"], spec.dataset_root, config["image_size"],
                                   config["batch_size"], config["seed"])
        return module, {"root": spec.dataset_root}
    data_class = plugins.import_class(config["dataset"], "data.class_path")
    init_args = config[INIT_ARGS_KEYS["data"]]
    return data_class(**init_args), {
        "class_path": config["dataset"], "init_args": init_args,
        "source_sha256": plugins.source_sha256(data_class)}


def _builtin_summary(datamodule: BuiltinDataModule, subset: dict[str, Any]) -> dict[str, Any]:
    images = datamodule.images
    return {"train_images": subset["train_items"],
            "train_split_images": len(images.train_labels),
            "test_images": len(images.test_labels), "channels": images.train_images.shape[1],
            "image_size": images.train_images.shape[-1]}


def _model_class(config: dict[str, Any], datamodule: LightningDataModule
                 ) -> tuple[type, dict[str, Any]]:
    """The class to train and its init args: a reference model's from the config (the image
    geometry from the built-in data, which it loads), a user's from ``model_init_args`` with
    ``width`` applied."""
    model_class = plugins.import_class(plugins.class_path(config["model"]), "model.class_path")
    if INIT_ARGS_KEYS["model"] not in config:  # gan, vae: the harness derives the init args
        datamodule.setup("fit")  # built-in data loads once: Lightning's own setup is a no-op
        return model_class, {
            "image_size": config["image_size"],
            "channels": datamodule.images.train_images.shape[1],
            "width": config["width"], "latent_dim": config["latent_dim"], "lr": config["lr"]}
    return model_class, plugins.scaled_init_args(
        config[INIT_ARGS_KEYS["model"]], config[WIDTH_ARG_KEY], config["width"], model_class)


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _energy_callback(spec: RunSpec, codecarbon_dir: Path, others: ranks.Ranks | None
                     ) -> EnergyCallback:
    energy = spec.energy
    return EnergyCallback(
        # on several devices, rank 0 measures every rank's GPU; whose processes they are
        all_ranks=True, own_pids=others.pids if others is not None else None,
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
