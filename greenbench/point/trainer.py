"""The point's Trainer: the user's trainer section (LightningCLI's ``trainer:``), plus what
measuring needs, and nothing else.

A keyword the sweep does not give takes Lightning's own default, except these, which measuring
needs (``MEASURING_DEFAULTS``): no progress bar and no model summary (terminal output in a
point's log, and time inside the measured windows), no logger and no checkpointing unless the
user asks for them (a default logger and checkpoint would write files nobody asked for, and
spend energy doing it). The keywords greenbench owns (``OWNED``) are refused before any point
runs, each with where its setting goes. ``default_root_dir`` is the point's own scratch folder.
``devices`` is 1 unless the section says otherwise; for more, greenbench starts the ranks itself
(``ranks``): the Trainer gets Lightning's own cluster environment, and a spawn or fork strategy
its ``ddp`` form.

The user's callbacks run in the point as Lightning runs them, inside the measured windows: their
cost is part of the user's training. ``MeasuredTrainer`` notes who ended fit before its budget:
a callback (by class name) or the module; the point adds ``budget`` when the epoch or step
budget did, ``target`` when a quality target did, or ``diverged``; with the epoch and batch.
A ``ModelCheckpoint`` writes into the point's scratch folder; the point hands its files to the
parent, which stores them as ``checkpoints/<run_id>/``.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import LightningEnvironment

from greenbench.models import plugins
from greenbench.point import ranks

# Trainer keywords a sweep may not set: what to do instead.
OWNED = {
    "precision": "set it as the precision axis instead (precision, or grid.precision)",
    "max_epochs": "set train.epochs instead",
    "max_steps": "set train.steps instead (training batches)",
    "max_time": "set train.epochs or train.steps instead (a point's budget is epochs or "
                "batches)",
    "num_nodes": "a point runs on one node (devices: N runs it on N devices of the node)",
    "default_root_dir": "greenbench gives each point a folder of its own (checkpoints go to "
                        "checkpoints/<run_id>/ in the sweep folder)",
}
# What measuring needs, unless the user's trainer section says otherwise.
MEASURING_DEFAULTS = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "logger": False,
    "enable_checkpointing": False,
}
# Callbacks and loggers are given as classes; the Trainer gets instances.
CLASS_KEYWORDS = ("callbacks", "logger")
BUDGET, TARGET, DIVERGED = "budget", "target", "diverged"


def trainer_keywords() -> dict[str, inspect.Parameter]:
    """The keywords ``lightning.pytorch.Trainer`` takes."""
    parameters = dict(inspect.signature(Trainer.__init__).parameters)
    parameters.pop("self", None)
    return parameters


def class_specs(value: Any) -> list[dict[str, Any]]:
    """A trainer section's ``callbacks`` or ``logger`` as a list of ``{class_path,
    init_args}`` (none for ``false``, ``true`` or nothing)."""
    if isinstance(value, dict):
        return [value]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def build(spec: dict[str, Any], field: str, **defaults: Any) -> Any:
    """An instance of ``spec``'s class, with ``defaults`` for init args it takes and the
    sweep does not give (a logger's ``version``, a checkpoint's ``dirpath``)."""
    cls = plugins.import_class(spec["class_path"], field)
    init_args = dict(spec.get("init_args") or {})
    accepted = inspect.signature(cls.__init__).parameters
    for name, value in defaults.items():
        if name in accepted and init_args.get(name) is None:
            init_args[name] = value
    return cls(**init_args)


class MeasuredTrainer(Trainer):
    """Lightning's Trainer, unchanged but for one thing: it notes who first set
    ``should_stop``, and when (``stop``). A callback, the module or Lightning itself ends fit by
    setting that attribute; the object whose method set it (``self`` in the caller's frame) is
    who stopped it."""

    @property
    def should_stop(self) -> bool:
        return self.__dict__.get("_should_stop", False)

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        stop = self.__dict__.setdefault("stop", {"by": None})
        if value and not self.should_stop and stop["by"] is None:
            caller = sys._getframe(1).f_locals.get("self")
            by = "LightningModule" if isinstance(caller, LightningModule) else \
                type(caller).__name__ if caller is not None else "unknown"
            stop.update(by=by, epoch=self.current_epoch,
                        batches=self.fit_loop.epoch_loop.batch_progress.total.ready)
        self.__dict__["_should_stop"] = value


def make_trainer(section: dict[str, Any] | None, precision: str, epochs: int | None,
                 own: list[Callback], before: list[Callback], root_dir: Path,
                 run_id: str, hyperparameters: dict[str, Any]
                 ) -> tuple[Trainer, dict[str, Any]]:
    """The point's Trainer and the record of who stopped it (``MeasuredTrainer.stop``):
    ``section`` (the config's trainer section, or None) with greenbench's ``own`` callbacks after
    the user's and ``before`` ahead of them; loggers name their run after ``run_id`` and log
    ``hyperparameters``."""
    section = dict(section or {})
    keywords = {key: value for key, value in section.items() if key not in CLASS_KEYWORDS}
    user_callbacks = [build(spec, "trainer.callbacks")
                      for spec in class_specs(section.get("callbacks"))]
    for callback in user_callbacks:
        if isinstance(callback, ModelCheckpoint):  # never into the source tree: see above
            callback.dirpath = str(root_dir / "checkpoints")
    loggers = [build(spec, "trainer.logger", version=run_id, run_name=run_id)
               for spec in class_specs(section.get("logger"))]
    settings = {**MEASURING_DEFAULTS, "accelerator": "auto", "devices": 1, **keywords}
    if ranks.world_size(section) > 1:  # the ranks are started by greenbench, not Lightning
        settings["strategy"] = ranks.launched_strategy(settings.get("strategy", "auto"))
        given = settings.get("plugins")
        settings["plugins"] = [*(given if isinstance(given, list) else
                                 [given] if given is not None else []), LightningEnvironment()]
    if "logger" in section:
        settings["logger"] = loggers or section["logger"]
    if any(isinstance(callback, ModelCheckpoint) for callback in user_callbacks) and \
            "enable_checkpointing" not in keywords:
        settings["enable_checkpointing"] = True
    trainer = MeasuredTrainer(
        **settings,
        precision=precision,
        max_epochs=epochs or -1,  # a steps budget: the training monitor stops fit
        callbacks=[*before, *user_callbacks, *own],
        default_root_dir=str(root_dir),
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)
    return trainer, trainer.__dict__.setdefault("stop", {"by": None})


def checkpoint_files(root_dir: Path) -> dict[str, Path]:
    """What the user's checkpoint callbacks wrote, by name relative to their folder."""
    folder = root_dir / "checkpoints"
    return {path.relative_to(folder).as_posix(): path
            for path in sorted(folder.rglob("*")) if path.is_file()} if folder.is_dir() else {}
