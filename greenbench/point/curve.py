"""Quality along training: score the model every N epochs, inside the energy callback's eval
window, and keep each point with the training joules spent to reach it.

From the curve come ``energy_to_quality_j`` (the training joules until KID first reached a
target, the energy analogue of time-to-accuracy) and the best point (GAN quality is not
monotonic, so best and final are both reported).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from greenbench.energy.callback import EnergyCallback
from greenbench.records import CURVE_KEYS, HIGHER_IS_BETTER


class QualityCurve(Callback):
    """Calls ``score(module)`` at the end of every ``every_n_epochs``-th epoch (None: never;
    the harness scores the end of training itself) and records the points."""

    def __init__(
        self,
        score: Callable[[LightningModule], dict[str, Any]],
        energy: EnergyCallback,
        every_n_epochs: int | None = None,
    ):
        self.score = score
        self.energy = energy
        self.every_n_epochs = every_n_epochs
        self.points: list[dict[str, Any]] = []  # {"epoch", "step", "train_j", "scores"}
        self.epochs_ended = 0  # a budget in steps may end the last epoch early; it counts
        self.seconds = 0.0  # wall time spent scoring, all points together

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epochs_ended += 1
        if self.every_n_epochs and self.epochs_ended % self.every_n_epochs == 0:
            self.add(pl_module, self.epochs_ended, trainer.global_step)

    def add(self, module: LightningModule, epoch: int, step: int) -> dict[str, Any]:
        """Score ``module`` now, as ``eval`` energy, and append the point."""
        started = time.perf_counter()
        with self.energy.eval_window():
            scores = self.score(module)
        self.seconds += time.perf_counter() - started
        point = {"epoch": epoch, "step": step, "train_j": self.energy.training_joules(),
                 "scores": scores}
        self.points.append(point)
        return point

    def record(self) -> list[dict[str, Any]]:
        """The curve as records keep it: epoch, step, train_j and the headline metrics."""
        return [
            {"epoch": p["epoch"], "step": p["step"], "train_j": p["train_j"],
             **{key: p["scores"].get(key) for key in CURVE_KEYS}}
            for p in self.points
        ]


def best_point(points: list[dict[str, Any]], metric: str = "kid") -> dict[str, Any] | None:
    """The point with the best ``metric`` (its declared direction), or None when no point has
    one."""
    scored = [p for p in points if p["scores"].get(metric) is not None]
    if not scored:
        return None
    pick = max if HIGHER_IS_BETTER[metric] else min
    return pick(scored, key=lambda p: p["scores"][metric])


def energy_to_quality(points: list[dict[str, Any]], target_kid: float | None) -> float | None:
    """Training joules spent until KID first reached ``target_kid``; None if it never did."""
    if target_kid is None:
        return None
    for point in points:
        kid = point["scores"].get("kid")
        if kid is not None and kid <= target_kid:
            return point["train_j"]
    return None
