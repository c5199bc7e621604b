"""A user's project for the fidelity test: a classifier, a data module that counts its hooks and
changes every batch after transfer, and a callback that writes down what fit did. Files are
named ``<trace>-<tag>-acc<accumulate_grad_batches>``, one per trainer setting. It knows
nothing of greenbench (it must not import it): the same classes train under a greenbench point
and under plain Lightning, and what they write is compared."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset


class CountingData(pl.LightningDataModule):
    """Points around four centres; every hook it has counts its calls, and the batch is scaled
    after transfer (so skipping the hook would change every loss). At teardown after fit it
    writes its counts to ``<trace>-<tag>-acc<n>.hooks.json``."""

    def __init__(self, batch_size: int = 8, count: int = 96, trace: str = "trace",
                 tag: str = "x"):
        super().__init__()
        self.batch_size, self.count, self.trace, self.tag = batch_size, count, trace, tag
        self.calls: Counter = Counter()

    def prepare_data(self) -> None:
        self.calls["prepare_data"] += 1

    def setup(self, stage: str) -> None:
        self.calls[f"setup:{getattr(stage, 'value', stage)}"] += 1
        generator = torch.Generator().manual_seed(7)
        centres = torch.randn(4, 6, generator=generator)
        labels = torch.arange(self.count) % 4
        points = 2 * centres[labels] + torch.randn(self.count, 6, generator=generator)
        self.train_set = TensorDataset(points, labels)
        self.val_set = TensorDataset(points[: self.count // 2], labels[: self.count // 2])

    def train_dataloader(self) -> DataLoader:
        self.calls["train_dataloader"] += 1
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.calls["val_dataloader"] += 1
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def on_before_batch_transfer(self, batch, dataloader_idx):
        self.calls["on_before_batch_transfer"] += 1
        return batch

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        self.calls["transfer_batch_to_device"] += 1
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        self.calls["on_after_batch_transfer"] += 1
        x, y = batch
        return x * 0.5, y

    def teardown(self, stage: str) -> None:
        self.calls[f"teardown:{getattr(stage, 'value', stage)}"] += 1
        if stage == "fit":
            name = f"{self.trace}-{self.tag}-acc{self.trainer.accumulate_grad_batches}"
            Path(f"{name}.hooks.json").write_text(json.dumps(self.calls))


class Net(pl.LightningModule):
    def __init__(self, hidden: int = 16, lr: float = 0.2):
        super().__init__()
        self.lr = lr
        self.layers = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Dropout(0.2),
                                    nn.Linear(hidden, 4))

    def setup(self, stage: str) -> None:
        # A LightningCLI habit: the module reads its data module while it is set up.
        self.classes = self.trainer.datamodule.val_set.tensors[1].max().item() + 1

    def training_step(self, batch, batch_idx):
        x, y = batch
        return functional.cross_entropy(self.layers(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", functional.cross_entropy(self.layers(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class FitLog(pl.Callback):
    """Writes each training batch's loss, and the steps and epochs fit ran, to
    ``<trace>-<tag>-acc<n>.fit.json`` when training ends."""

    def __init__(self, trace: str = "trace", tag: str = "x"):
        self.trace, self.tag, self.losses = trace, tag, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module):
        name = f"{self.trace}-{self.tag}-acc{trainer.accumulate_grad_batches}"
        Path(f"{name}.fit.json").write_text(json.dumps({
            "losses": self.losses, "optimizer_steps": trainer.global_step,
            "epochs": trainer.current_epoch}))
