"""A user's own project, as a sweep sees it: a classifier, a data module and a generative module
that know nothing of greenbench (this file must not import it). The tests copy it beside a
sweep file, whose folder greenbench puts on the import path.

Each constructor appends the arguments it received to the JSON-lines file named by ``trace``,
so a test can see what reached it.
"""

from __future__ import annotations

import json

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, Dataset


def _trace(path: str | None, **arguments) -> None:
    if path:
        with open(path, "a") as file:
            file.write(json.dumps(arguments) + "\n")


class Blobs(Dataset):
    """Points around one centre per class: ``(x, y)`` items with an integer label."""

    def __init__(self, count: int, classes: int, features: int, seed: int):
        centres = torch.randn(classes, features, generator=torch.Generator().manual_seed(0))
        self.labels = torch.arange(count) % classes
        noise = torch.randn(count, features, generator=torch.Generator().manual_seed(seed))
        self.points = 3 * centres[self.labels] + noise

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.points[index], int(self.labels[index])


class BlobsData(pl.LightningDataModule):
    def __init__(self, batch_size: int = 16, count: int = 256, classes: int = 4,
                 features: int = 8, trace: str | None = None):
        super().__init__()
        _trace(trace, cls="BlobsData", batch_size=batch_size, count=count)
        self.batch_size, self.count, self.classes, self.features = (
            batch_size, count, classes, features)

    def setup(self, stage: str) -> None:
        self.train_set = Blobs(self.count, self.classes, self.features, seed=1)
        self.val_set = Blobs(self.count // 4, self.classes, self.features, seed=2)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=64)


class Patterns(Dataset):
    """8x8 one-channel images in [-1, 1]: one stripe pattern per class, plus noise; items are
    ``(image, label)``, or the image alone when ``labelled`` is false."""

    def __init__(self, count: int, seed: int, labelled: bool):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(count) % 4
        rows = torch.arange(8).view(8, 1).expand(8, 8)
        patterns = torch.stack([(rows % (k + 2) == 0).float() for k in range(4)]) * 2 - 1
        noise = 0.2 * torch.randn(count, 1, 8, 8, generator=generator)
        self.images = (patterns[self.labels].unsqueeze(1) + noise).clamp(-1, 1)
        self.labelled = labelled

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        if self.labelled:
            return self.images[index], int(self.labels[index])
        return self.images[index]


class PatternData(pl.LightningDataModule):
    def __init__(self, batch_size: int = 32, labelled: bool = True):
        super().__init__()
        self.batch_size, self.labelled = batch_size, labelled

    def setup(self, stage: str) -> None:
        self.train_set = Patterns(256, seed=1, labelled=self.labelled)
        self.val_set = Patterns(128, seed=2, labelled=self.labelled)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=64)


class BlobsClassifier(pl.LightningModule):
    def __init__(self, hidden: int = 32, lr: float = 0.01, features: int = 8,
                 classes: int = 4, trace: str | None = None):
        super().__init__()
        _trace(trace, cls="BlobsClassifier", hidden=hidden, lr=lr)
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, classes))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        accuracy = (self.net(x).argmax(dim=1) == y).float().mean()
        self.log("val_acc", accuracy, on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class TinyGenerator(pl.LightningModule):
    """A generator of 8x8 one-channel images in [-1, 1], trained to match the images' mean
    and spread (a toy, but it samples, which is what greenbench scores)."""

    def __init__(self, latent: int = 4, lr: float = 0.01, trace: str | None = None):
        super().__init__()
        _trace(trace, cls="TinyGenerator", latent=latent, lr=lr)
        self.latent, self.lr = latent, lr
        self.net = nn.Sequential(nn.Linear(latent, 64), nn.Tanh())

    def training_step(self, batch, batch_idx):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        fake = self.sample(len(images))
        loss = (fake.mean(0) - images.flatten(1).mean(0).view(1, 8, 8)).square().mean() + (
            fake.std(0) - images.std(0)).square().mean()
        self.log("match_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        self.log("val_mean_gap", (self.sample(len(images)).mean() - images.mean()).abs())

    def sample(self, n: int) -> torch.Tensor:
        z = torch.randn(n, self.latent, device=self.device)
        return self.net(z).view(n, 1, 8, 8)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class NotAModule:
    def __init__(self, hidden: int = 1):
        self.hidden = hidden
