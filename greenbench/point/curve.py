"""Quality along training: the module's logged metric after each validation, and the
feature-space scores every N epochs for a module that can sample, each point with the training
joules spent to reach it.

A point is taken at the end of every epoch that ran a validation loop (its logged metrics as
Lightning aggregated them; several validations in one epoch give the last) or that is due for
scoring (``every_n_epochs``, inside the energy callback's ``eval`` window). From the curve come
``energy_to_quality_j`` (the training joules until the quality metric first reached a target,
``reached``'s ``fit_j``: the energy analogue of time-to-accuracy) and the best point (GAN
quality is not monotonic, so best and final are both reported).

With ``stop_at_target`` the curve ends fit at the first validation (or scoring) whose metric
reaches the target: it sets ``trainer.should_stop`` there, as EarlyStopping would, unless the
epoch budget ends fit at that epoch anyway. The point that first reached the target
(``reached``: its epoch, optimizer step, training batches and fit_j) is kept whether or not it
stops fit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from greenbench.energy.callback import EnergyCallback
from greenbench.records import CURVE_SCORES, higher_is_better

# Before greenbench's score of a sample when the module logs a metric of the same name, which
# it names as its quality metric: the module's value keeps the name, greenbench's is apart.
OWN_PREFIX = "sample_"


class QualityCurve(Callback):
    """Keeps the quality points of one fit: ``{"epoch", "step", "fit_j", "scores"}``.

    ``score(module)`` gives the feature-space scores (None: the module cannot sample); it runs
    at the end of every ``every_n_epochs``-th epoch (None: never; the harness scores the end of
    training itself). ``metric`` is the quality metric, kept from what the module logs."""

    def __init__(
        self,
        score: Callable[[LightningModule], dict[str, Any]] | None,
        energy: EnergyCallback,
        every_n_epochs: int | None = None,
        metric: str = "kid",
        from_training: bool = False,
        mode: str | None = None,
        target: float | None = None,
        stop_at_target: bool = False,
    ):
        self.score = score
        self.energy = energy
        self.every_n_epochs = every_n_epochs
        self.metric = metric
        self.higher = higher_is_better(metric, mode)
        self.target = target
        self.stop_at_target = stop_at_target and target is not None
        self.reached: dict[str, Any] | None = None  # the point that first reached the target
        self.stopped_fit = False  # whether reaching the target ended fit
        # without validation, the metric is what the module logged in training, read at the
        # end of each epoch (quality.source: training)
        self.from_training = from_training
        self.non_finite: float | None = None  # the metric's last value that was not finite
        self.points: list[dict[str, Any]] = []
        self.epochs_ended = 0  # a budget in steps may end the last epoch early; it counts
        self.seconds = 0.0  # wall time spent scoring, all points together
        self.logged_names: set[str] = set()  # every metric the module logged, for a reason
        self.step_only_names: set[str] = set()  # those logged per step only, never read
        self._logged: dict[str, float] | None = None  # the latest validation's, this epoch

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._logged = self.read_logged(trainer)
            # a validation in the middle of an epoch (val_check_interval) stops fit there
            if self.stop_at_target and self.reaches(self._logged.get(self.metric)):
                self._stop(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.from_training:
            self._logged = self.read_logged(trainer)
        self.epochs_ended += 1
        due = bool(self.every_n_epochs) and self.epochs_ended % self.every_n_epochs == 0
        if due or self._logged is not None:
            self.add(pl_module, self.epochs_ended, trainer.global_step, score=due)

    def read_logged(self, trainer: Trainer) -> dict[str, float]:
        """The scalar metrics the module has logged, as floats (a window edge: reading them
        synchronises the device once per validation, never per batch)."""
        logged = {}
        for name, value in trainer.callback_metrics.items():
            scalar = value.numel() == 1 if isinstance(value, torch.Tensor) else (
                isinstance(value, (int, float)) and not isinstance(value, bool))
            if scalar:
                logged[name] = float(value)
        self.logged_names.update(logged)
        # what went only to the loggers: metrics logged per step and never per epoch
        self.step_only_names.update(set(trainer.logged_metrics) - set(trainer.callback_metrics))
        return logged

    def add(self, module: LightningModule, epoch: int, step: int, *, score: bool = True,
            logged: dict[str, float] | None = None) -> dict[str, Any]:
        """Take a point now: ``score`` it (as ``eval`` energy) when asked and the module can
        sample, with the metric from ``logged`` or the epoch's latest validation."""
        logged = self._logged if logged is None else logged
        self._logged = None
        scores: dict[str, Any] = {}
        if logged is not None and self.metric in logged:
            if math.isfinite(logged[self.metric]):
                scores[self.metric] = logged[self.metric]
            else:
                self.non_finite = logged[self.metric]
        point = {"epoch": epoch, "step": step, "fit_j": self.energy.training_joules(),
                 "batches": module.trainer.fit_loop.epoch_loop.batch_progress.total.ready,
                 "scores": scores, "scored": False}
        self.points.append(point)
        if score:
            self.complete(point, module)
        else:
            self._check_target(point, module.trainer)
        return point

    def reaches(self, value: float | None) -> bool:
        """Whether ``value`` of the metric is at the target or better."""
        if self.target is None or value is None or not math.isfinite(value):
            return False
        return value >= self.target if self.higher else value <= self.target

    def _stop(self, trainer: Trainer) -> None:
        """End fit here, unless the epoch budget ends it at this epoch anyway (then the
        budget stopped it, and nothing was saved)."""
        last_epoch = trainer.max_epochs is not None and trainer.max_epochs > 0 and \
            trainer.current_epoch + 1 >= trainer.max_epochs
        if (not last_epoch or not trainer.is_last_batch) and not trainer.should_stop:
            trainer.should_stop = True
            self.stopped_fit = True

    def complete(self, point: dict[str, Any], module: LightningModule) -> None:
        """Add the feature-space scores to ``point`` unless it has them or the module cannot
        sample (the end of training of a module whose last validation made the point)."""
        if point["scored"] or self.score is None:
            return
        started = time.perf_counter()
        with self.energy.eval_window():
            scored = self.score(module)
        for name, value in scored.items():
            # the module's own metric of this name wins; greenbench's keeps a name apart
            clash = name == self.metric and self.metric in self.logged_names
            point["scores"][f"{OWN_PREFIX}{name}" if clash else name] = value
        self.seconds += time.perf_counter() - started
        point["scored"] = True
        self._check_target(point, module.trainer)

    def _check_target(self, point: dict[str, Any], trainer: Trainer) -> None:
        """Keep ``point`` as where the target was first reached if it is (its scores are
        complete: the module's metric, and greenbench's once scored), and stop fit there when
        asked to."""
        if self.reached is not None or not self.reaches(point["scores"].get(self.metric)):
            return
        self.reached = point
        if self.stop_at_target and trainer.state.fn == "fit" and trainer.training:
            self._stop(trainer)

    def record(self) -> list[dict[str, Any]]:
        """The curve as records keep it: epoch, step, fit_j, the headline scores and the
        quality metric under its own name."""
        keys = CURVE_SCORES if self.metric in CURVE_SCORES else (*CURVE_SCORES, self.metric)
        return [
            {"epoch": p["epoch"], "step": p["step"], "fit_j": p["fit_j"],
             **{key: p["scores"].get(key) for key in keys}}
            for p in self.points
        ]


def best_point(points: list[dict[str, Any]], metric: str = "kid", mode: str | None = None
               ) -> dict[str, Any] | None:
    """The point with the best ``metric`` in its direction, or None when no point has one."""
    scored = [p for p in points if p["scores"].get(metric) is not None]
    if not scored:
        return None
    pick = max if higher_is_better(metric, mode) else min
    return pick(scored, key=lambda p: p["scores"][metric])
