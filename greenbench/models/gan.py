"""Reference GAN: a DCGAN sized to the image, trained with the non-saturating loss.

The generator is a :class:`~greenbench.models.layers.DecoderStack` ending in ``tanh`` (images
live in ``[-1, 1]``); the discriminator is an :class:`~greenbench.models.layers.EncoderStack`
followed by one convolution that covers the whole remaining feature map and yields one logit
per image. Both are initialised as in DCGAN and trained by Adam(lr, betas=(0.5, 0.999)); under
pure float16 (``16-true``) Adam's epsilon is raised to 1e-4 (see
:func:`~greenbench.models.layers.adam_eps`).

Training uses Lightning's *manual* optimization because a GAN step updates two networks with
two optimizers. Every update goes through ``toggled_optimizer`` (only the parameters of the
network being updated require gradients), ``manual_backward`` and the Lightning-wrapped
optimizer's ``step``, so the precision plugin can scale the loss and unscale/skip the step
under ``16-mixed``. Per batch:

1. ``fake = G(z)`` once, with the generator's graph kept.
2. Discriminator: ``d_loss = BCE(D(real), 1) + BCE(D(fake.detach()), 0)``.
3. Generator: ``g_loss = BCE(D(fake), 1)``, with the freshly updated discriminator.

Each training step therefore performs two optimizer steps, and ``trainer.global_step`` (which
counts optimizer steps) advances by two per batch.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from greenbench.models.layers import (
    DecoderStack,
    EncoderStack,
    adam_eps,
    dcgan_init,
    decode_prior,
)


class Discriminator(nn.Module):
    """Encoder stack plus a full-size convolution: images ``(B, C, H, W)`` to logits ``(B,)``.

    No sigmoid: the loss uses ``binary_cross_entropy_with_logits``.
    """

    def __init__(self, image_size: int, channels: int, width: float = 1.0) -> None:
        super().__init__()
        self.features = EncoderStack(image_size, channels, width)
        self.head = nn.Conv2d(self.features.out_channels, 1, kernel_size=self.features.out_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).reshape(x.shape[0])


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of logits against a constant label, computed in float32."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class GAN(pl.LightningModule):
    """DCGAN with attributes ``generator`` and ``discriminator``; see the module docstring.

    Args:
        image_size: height and width of the (square) images, 8 to 64.
        channels: image channels (1 or 3 in practice).
        width: multiplier of every hidden channel count (1.0 = 64 base channels).
        latent_dim: size of the generator's noise vector.
        lr: Adam learning rate of both networks.
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        width: float = 1.0,
        latent_dim: int = 32,
        lr: float = 2e-4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.latent_dim = latent_dim
        self.lr = lr
        self.generator = DecoderStack(
            image_size, channels, latent_dim, width, final_activation=nn.Tanh()
        )
        self.discriminator = Discriminator(image_size, channels, width)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generate images ``(B, C, H, W)`` in ``[-1, 1]`` from noise ``(B, latent_dim)``."""
        return self.generator(z)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        # Called after Lightning has converted the module to the training precision, so the
        # parameter dtype tells whether this is pure float16 training (see ``adam_eps``).
        kwargs = {
            "lr": self.lr,
            "betas": (0.5, 0.999),
            "eps": adam_eps(next(self.parameters()).dtype),
        }
        opt_g = torch.optim.Adam(self.generator.parameters(), **kwargs)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), **kwargs)
        return [opt_g, opt_d]

    def training_step(
        self, batch: tuple[torch.Tensor, ...], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        real = batch[0]
        b = real.shape[0]
        opt_g, opt_d = self.optimizers()

        z = torch.randn(b, self.latent_dim, device=real.device, dtype=real.dtype)
        fake = self.generator(z)

        with self.toggled_optimizer(opt_d):
            d_real = _bce(self.discriminator(real), 1.0)
            d_fake = _bce(self.discriminator(fake.detach()), 0.0)
            d_loss = d_real + d_fake
            self.manual_backward(d_loss)
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)

        with self.toggled_optimizer(opt_g):
            g_loss = _bce(self.discriminator(fake), 1.0)
            self.manual_backward(g_loss)
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)

        losses = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}
        self.log_dict(
            {f"train/{name}": value for name, value in losses.items()},
            on_step=True,
            on_epoch=False,
            batch_size=b,
        )
        return losses

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` generated images ``(n, C, H, W)``, float32 in ``[-1, 1]``.

        The generator runs in eval mode (batch norm uses its running statistics) without
        gradients; the previous train/eval mode is restored. The noise is drawn on the CPU
        from ``generator`` so a seeded generator gives the same images on any device.
        """
        return decode_prior(self, self.generator, self.latent_dim, n, generator)
