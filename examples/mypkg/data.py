"""scikit-learn's bundled handwritten digits (8x8, ten classes) as a LightningDataModule:
nothing is downloaded. Items are ``(image, label)``: an image ``(1, 8, 8)`` in [-1, 1] and an
integer label, which lets greenbench draw class-stratified subsets and train a feature
extractor for sample quality."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset


class DigitsData(pl.LightningDataModule):
    def __init__(self, batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0):
        super().__init__()
        self.batch_size, self.val_fraction, self.seed = batch_size, val_fraction, seed

    def setup(self, stage: str) -> None:
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
        labels = torch.tensor(digits.target, dtype=torch.int64)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        split = int(len(labels) * (1 - self.val_fraction))
        self.train_set = TensorDataset(images[order[:split]], labels[order[:split]])
        self.val_set = TensorDataset(images[order[split:]], labels[order[split:]])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)
