"""FLOPs of one training step, counted by PyTorch: a hardware-independent proxy beside joules.

``StepFlops`` is a Lightning callback that counts the floating-point operations of the first
training batch with ``torch.utils.flop_counter.FlopCounterMode``: forward and backward of
everything ``training_step`` runs (both networks and both updates of a GAN). The count depends
on the model and the batch shape, not on the machine; optimizer arithmetic is not counted.
It runs on the first batch only, inside the warm-up, so training is not slowed after it.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.flop_counter import FlopCounterMode


class StepFlops(Callback):
    def __init__(self) -> None:
        self.flops_per_step: int | None = None
        self._counter: FlopCounterMode | None = None

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.flops_per_step is None and self._counter is None:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        if self._counter is not None:
            self._finish()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if self._counter is not None:
            self._finish()

    def _finish(self) -> None:
        counter, self._counter = self._counter, None
        counter.__exit__(None, None, None)
        self.flops_per_step = int(counter.get_total_flops())
