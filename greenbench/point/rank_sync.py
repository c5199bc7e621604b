"""``RankSync``: the last callback on every rank of a point on several devices (``ranks``).

It keeps the ranks' decisions one, over a CPU (gloo) group so that no device is synchronised:

* ``should_stop`` after each training batch, validation and training epoch is set on every rank
  when any rank set it (a budget, a divergence, a pilot, a quality target or a user's callback
  seen on one rank ends fit on all of them at the same batch, as Lightning's own EarlyStopping
  does for itself);
* when fit starts, the other ranks wait for rank 0's meters and idle baseline (the windows'
  first edge, agreed);
* when training ends, every rank's training samples (warm-up and after), its divergence and who
  stopped it come to rank 0, which adds them to its record (``samples_seen`` and J per 1,000
  samples count every rank's samples);
* after fit, rank 0 tells the others whether to validate once more (``tell``, ``told``).

On one device (no process group) it does nothing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer

from greenbench.energy.callback import EnergyCallback, batch_size_of
from greenbench.energy.monitor import TRAIN, WARMUP
from greenbench.point.training import TrainingMonitor

NOBODY = "RankSync"  # what MeasuredTrainer notes when another rank's stop was taken up here


class RankSync(Callback):
    def __init__(self, warmup_steps: int, monitor: TrainingMonitor,
                 energy: EnergyCallback | None = None):
        self.warmup_steps = warmup_steps
        self.monitor, self.energy = monitor, energy
        self.group: Any = None
        self.samples = {WARMUP: 0, TRAIN: 0}  # this rank's, by window
        self._batches = 0

    @property
    def active(self) -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.active and self.group is None:  # collectively, on every rank
            self.group = dist.group.WORLD if dist.get_backend() == "gloo" else \
                dist.new_group(backend="gloo")

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.samples, self._batches = {WARMUP: 0, TRAIN: 0}, 0
        if self.active:
            dist.barrier(group=self.group)  # rank 0's meters and idle baseline are done

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._batches += 1
        self.samples[WARMUP if self._batches <= self.warmup_steps else TRAIN] += \
            batch_size_of(batch)
        self._agree_on_stopping(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._agree_on_stopping(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._agree_on_stopping(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.active:
            return
        stop = trainer.__dict__.setdefault("stop", {"by": None})  # MeasuredTrainer's note
        mine = {"samples": dict(self.samples), "divergence": self.monitor.divergence,
                "stop": dict(stop)}
        everyone: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine, group=self.group)
        if dist.get_rank() == 0:
            self._take_up(everyone, stop)

    def tell(self, what: str) -> None:
        """Rank 0: what the other ranks do after fit (``ranks.VALIDATE`` or ``ranks.DONE``)."""
        if self.active:
            dist.broadcast_object_list([what], src=0, group=self.group)

    def told(self) -> str | None:
        """A rank above 0: what rank 0 said to do after fit."""
        if not self.active:
            return None
        message: list[Any] = [None]
        dist.broadcast_object_list(message, src=0, group=self.group)
        return message[0]

    def _agree_on_stopping(self, trainer: Trainer) -> None:
        if not self.active:
            return
        flag = torch.tensor([int(trainer.should_stop)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        if flag.item() and not trainer.should_stop:
            trainer.should_stop = True  # noted as RankSync's: on_train_end names the rank

    def _take_up(self, everyone: list[dict[str, Any]], stop: dict[str, Any]) -> None:
        """Rank 0: the other ranks' samples into the training monitor and the energy windows,
        their divergence and stop where rank 0 had none of its own."""
        for rank, other in enumerate(everyone[1:], start=1):
            for window, samples in other["samples"].items():
                self.monitor.samples += samples
                if self.energy is not None and self.energy.monitor is not None:
                    self.energy.monitor.count_samples(samples, window)
            if self.monitor.divergence is None and other["divergence"] is not None:
                self.monitor.divergence = f"rank {rank}: {other['divergence']}"
            if stop.get("by") in (None, NOBODY) and \
                    other["stop"].get("by") not in (None, NOBODY):
                stop.update(other["stop"], by=f"{other['stop']['by']} (rank {rank})")
