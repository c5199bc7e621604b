"""The built-in datasets as a LightningDataModule, so that they take the same path through
the harness as a user's data module.

``BuiltinDataModule`` trains on the train split in shuffled batches (a generator seeded with
the point's seed; full batches only: BatchNorm and a fair per-step cost both want them) and
validates on the test split. Its dataset is a ``TensorDataset`` of ``(image, label)`` pairs,
so the harness can draw a class-stratified subset for ``data_fraction``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from greenbench.data.datasets import ImageData, load_dataset


class BuiltinDataModule(LightningDataModule):
    def __init__(self, name: str, root: str | Path | None, image_size: int, batch_size: int,
                 seed: int = 0):
        super().__init__()
        self.name, self.root, self.image_size = name, root, image_size
        self.batch_size, self.seed = batch_size, seed
        self.images: ImageData | None = None

    def setup(self, stage: str) -> None:
        if self.images is None:
            self.images = load_dataset(self.name, self.root, self.image_size)

    def train_dataloader(self) -> DataLoader:
        images = self._loaded()
        return DataLoader(
            TensorDataset(images.train_images, images.train_labels),
            batch_size=self.batch_size, shuffle=True, drop_last=True,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> DataLoader:
        images = self._loaded()
        return DataLoader(TensorDataset(images.test_images, images.test_labels),
                          batch_size=self.batch_size)

    def _loaded(self) -> ImageData:
        if self.images is None:
            raise RuntimeError("setup() has not run")
        return self.images
