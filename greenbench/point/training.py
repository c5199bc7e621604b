"""The callback the harness attaches to every training run: budget, divergence, statistics.

``TrainingMonitor`` counts training batches and samples, stops fit after ``train.steps`` batches
when the budget is given in steps, stops it at once when a loss becomes NaN or infinite, and keeps
the mean losses of the last epoch. It reads the loss tensors a LightningModule's
``training_step`` returns (a tensor, or a dict of tensors) and never synchronises the device in a
per-batch hook: on a GPU the finiteness check is copied to the host asynchronously and read once
the copy has landed, a step or two later; the step it names is the step whose loss went bad.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from greenbench.energy.callback import batch_size_of


class TrainingMonitor(Callback):
    def __init__(self, max_batches: int | None = None):
        self.max_batches = max_batches
        self.batches = 0
        self.epoch = 0  # of the latest training batch, counted from 0 as Lightning counts
        self.samples = 0
        self.divergence: str | None = None  # why training was stopped, if a loss went bad
        self._sums: dict[str, torch.Tensor] = {}
        self._epoch_batches = 0
        self._pending: deque[tuple[int, list[str], torch.Tensor, Any]] = deque()

    @property
    def diverged(self) -> bool:
        return self.divergence is not None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sums = {}
        self._epoch_batches = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        self.batches += 1
        self.epoch = trainer.current_epoch
        self.samples += batch_size_of(batch)
        losses = _loss_tensors(outputs)
        if losses:
            values = torch.stack([loss.float().reshape(()) for loss in losses.values()])
            self._accumulate(losses, values)
            self._watch(trainer, list(losses), values)
        if self.max_batches is not None and self.batches >= self.max_batches:
            trainer.should_stop = True

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        while self._pending:  # the end of fit is a window edge: waiting here costs nothing
            step, names, host, event = self._pending.popleft()
            event.synchronize()
            self._inspect(trainer, step, names, host)

    def final_losses(self) -> dict[str, float]:
        """Mean of each loss over the batches of the last (possibly partial) epoch."""
        if not self._epoch_batches:
            return {}
        return {name: float(total) / self._epoch_batches for name, total in self._sums.items()}

    def _accumulate(self, losses: dict[str, torch.Tensor], values: torch.Tensor) -> None:
        self._epoch_batches += 1
        for name, value in zip(losses, values, strict=True):
            self._sums[name] = self._sums[name] + value if name in self._sums else value

    def _watch(self, trainer: Trainer, names: list[str], values: torch.Tensor) -> None:
        if not values.is_cuda:
            self._inspect(trainer, self.batches, names, values)
            return
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append((self.batches, names, host, event))
        while self._pending and self._pending[0][3].query():
            step, names_done, host_done, _ = self._pending.popleft()
            self._inspect(trainer, step, names_done, host_done)

    def _inspect(self, trainer: Trainer, step: int, names: list[str], values: torch.Tensor) -> None:
        if self.divergence is not None:
            return
        for name, value in zip(names, values.tolist(), strict=True):
            if not math.isfinite(value):
                self.divergence = f"{name} became {value} at step {step}"
                trainer.should_stop = True
                return


def _loss_tensors(outputs: Any) -> dict[str, torch.Tensor]:
    """The scalar tensors a training_step returned: ``loss`` alone, or every entry of a dict."""
    if isinstance(outputs, torch.Tensor):
        outputs = {"loss": outputs}
    if not isinstance(outputs, dict):
        return {}
    return {
        name: value.detach()
        for name, value in outputs.items()
        if isinstance(value, torch.Tensor) and value.numel() == 1
    }
