"""Reference VAE: convolutional encoder/decoder with a Gaussian likelihood of learned scale.

The encoder is an :class:`~greenbench.models.layers.EncoderStack` followed by a linear layer
giving the mean and log-variance of a diagonal Gaussian posterior ``q(z | x)``; the prior is
a standard normal. The decoder is a :class:`~greenbench.models.layers.DecoderStack` with no
final activation whose output is the *mean* of a Gaussian likelihood ``p(x | z)`` over data
scaled to ``[-1, 1]``. The likelihood has ONE learned global log-scale ``log_sigma`` (shared
by all pixels, initialised at 0, i.e. sigma = 1), as in the sigma-VAE (Rybkin et al., 2021).
With a learned scale the reconstruction term is a proper log-density, so the loss is the
negative ELBO in nats per image and is comparable across runs::

    recon_nll = sum_pixels 0.5 * ((x - mean) / sigma) ** 2 + log_sigma + 0.5 * log(2 pi)
    kl        = -0.5 * sum_latent (1 + logvar - mu ** 2 - exp(logvar))
    loss      = mean_batch (recon_nll + kl)

The networks may run in any precision Lightning offers (``bf16-mixed``, ``16-true``,
``bf16-true``, ``64-true`` ...), but the loss terms are always computed in float32 (or
float64 under ``64-true``), because sums over thousands of pixels lose too much in 16 bits.
Optimization is automatic, with a single Adam(lr) (epsilon 1e-4 under pure float16, see
:func:`~greenbench.models.layers.adam_eps`).
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import nn

from greenbench.models.layers import (
    DecoderStack,
    EncoderStack,
    adam_eps,
    dcgan_init,
    decode_prior,
)

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _loss_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 for 16/32-bit tensors, float64 for float64 ones."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class VAE(pl.LightningModule):
    """Convolutional sigma-VAE; see the module docstring for the model and the loss.

    Args:
        image_size: height and width of the (square) images, 8 to 64.
        channels: image channels (1 or 3 in practice).
        width: multiplier of every hidden channel count (1.0 = 64 base channels).
        latent_dim: size of the latent code.
        lr: Adam learning rate.
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        width: float = 1.0,
        latent_dim: int = 32,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.latent_dim = latent_dim
        self.lr = lr
        self.encoder = EncoderStack(image_size, channels, width)
        feature_size = self.encoder.out_channels * self.encoder.out_size**2
        self.to_posterior = nn.Linear(feature_size, 2 * latent_dim)
        self.decoder = DecoderStack(image_size, channels, latent_dim, width)
        self.log_sigma = nn.Parameter(torch.zeros(()))
        self.apply(dcgan_init)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters ``(mu, logvar)``, each ``(B, latent_dim)``, of images ``x``."""
        h = self.encoder(x).flatten(start_dim=1)
        mu, logvar = self.to_posterior(h).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean ``(B, C, H, W)`` of the Gaussian likelihood for latent codes ``z``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (likelihood mean) of ``x`` from the posterior mean."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Called after Lightning's precision conversion; see ``adam_eps`` for float16.
        return torch.optim.Adam(self.parameters(), lr=self.lr, eps=adam_eps(self.log_sigma.dtype))

    def negative_elbo(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image ``(recon_nll, kl)`` in nats, each of shape ``(B,)``, for one posterior draw.

        The reparameterised draw and every loss term are computed in float32 (float64 for
        float64 inputs); only the networks run in the training precision.
        """
        mu, logvar = self.encode(x)
        dtype = _loss_dtype(x)
        mu, logvar = mu.to(dtype), logvar.to(dtype)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon_nll = self.reconstruction_nll(x, self.decode(z.to(x.dtype)))
        kl = -0.5 * (1.0 + logvar - mu.square() - logvar.exp()).sum(dim=1)
        return recon_nll, kl

    def reconstruction_nll(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """``-log p(x | z)`` per image, in nats, for likelihood means ``mean`` of the same shape
        as ``x`` (or with extra leading dimensions); computed in float32 (float64 for float64)."""
        dtype = _loss_dtype(x)
        log_sigma = self.log_sigma.to(dtype)
        scaled = (x.to(dtype) - mean.to(dtype)) * torch.exp(-log_sigma)
        pixel_nll = 0.5 * scaled.square() + log_sigma + _HALF_LOG_2PI
        return pixel_nll.flatten(start_dim=-3).sum(dim=-1)

    @torch.no_grad()
    def importance_nll(
        self, x: torch.Tensor, k: int = 64, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``-log p(x)`` per image in nats, estimated with ``k`` importance samples.

        The importance-weighted bound of Burda et al. (2016): with ``z_i ~ q(z | x)``,
        ``log p(x) >= log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x)``, tighter as ``k`` grows
        (``k = 1`` is the ELBO). The noise is drawn on the CPU from ``generator``.
        """
        mu, logvar = self.encode(x)
        dtype = _loss_dtype(x)
        mu, std = mu.to(dtype), torch.exp(0.5 * logvar.to(dtype))
        eps = torch.randn((k, *mu.shape), generator=generator, dtype=dtype).to(mu.device)
        z = mu + std * eps  # (k, B, L)
        mean = self.decode(z.flatten(end_dim=1).to(x.dtype)).unflatten(0, (k, x.shape[0]))
        log_likelihood = -self.reconstruction_nll(x, mean)  # (k, B)
        log_prior = (-0.5 * z.square() - _HALF_LOG_2PI).sum(dim=-1)
        log_posterior = (-0.5 * eps.square() - torch.log(std) - _HALF_LOG_2PI).sum(dim=-1)
        log_weights = log_likelihood + log_prior - log_posterior
        return math.log(k) - torch.logsumexp(log_weights, dim=0)

    def training_step(
        self, batch: tuple[torch.Tensor, ...], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        x = batch[0]
        recon_nll, kl = self.negative_elbo(x)
        loss = (recon_nll + kl).mean()
        out = {"loss": loss, "recon_nll": recon_nll.mean().detach(), "kl": kl.mean().detach()}
        self.log_dict(
            {f"train/{name}": value.detach() for name, value in out.items()},
            on_step=True,
            on_epoch=False,
            batch_size=x.shape[0],
        )
        return out

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` decoded prior samples ``(n, C, H, W)``: likelihood means clamped to [-1, 1].

        Float32, computed in eval mode without gradients; the previous train/eval mode is
        restored. The latent codes are drawn on the CPU from ``generator`` for reproducibility.
        """
        return decode_prior(self, self.decode, self.latent_dim, n, generator).clamp(-1.0, 1.0)
