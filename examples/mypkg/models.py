"""A classifier and a generative model for 8x8 digits: plain LightningModules.

``DigitsClassifier`` logs ``val_acc`` and ``val_loss`` in validation; greenbench reads the one
the sweep names. ``DigitsVAE`` has ``sample(n)``, returning images in [-1, 1] as
``(n, 1, 8, 8)``, so greenbench also scores its samples (KID, FID, precision/recall, ...).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional


class DigitsClassifier(pl.LightningModule):
    def __init__(self, hidden: int = 128, lr: float = 0.1, momentum: float = 0.9):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = functional.cross_entropy(self.net(images), labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self.net(images)
        self.log("val_loss", functional.cross_entropy(logits, labels))
        self.log("val_acc", (logits.argmax(dim=1) == labels).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr,
                               momentum=self.hparams.momentum)


class DigitsVAE(pl.LightningModule):
    def __init__(self, hidden: int = 256, latent: int = 8, lr: float = 2e-3):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 64))

    def _loss(self, images: torch.Tensor) -> torch.Tensor:
        mean, log_var = self.encoder(images).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        reconstruction = torch.tanh(self.decoder(z)).view_as(images)
        squared_error = (reconstruction - images).square().flatten(1).sum(1)
        kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1)
        return (squared_error + 0.1 * kl).mean()

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch[0])
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch[0]))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        z = torch.randn(n, self.hparams.latent, device=self.device)
        return torch.tanh(self.decoder(z)).view(n, 1, 8, 8)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
