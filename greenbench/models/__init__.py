"""Reference models that greenbench trains: a DCGAN (``gan``) and a sigma-VAE (``vae``).

This package is imported by the sweep validator just for :data:`MODELS` and
:data:`DEFAULT_LR`, so it must stay cheap: torch and Lightning are imported only when
:func:`build_model` is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule

#: Names accepted by :func:`build_model`.
MODELS = ("gan", "vae")

#: Default Adam learning rate of each model.
DEFAULT_LR = {"gan": 2e-4, "vae": 1e-3}


def build_model(
    name: str, *, image_size: int, channels: int, width: float, latent_dim: int, lr: float
) -> LightningModule:
    """Build the reference model ``name`` (one of :data:`MODELS`) for the given images."""
    if name == "gan":
        from greenbench.models.gan import GAN

        return GAN(
            image_size=image_size, channels=channels, width=width, latent_dim=latent_dim, lr=lr
        )
    if name == "vae":
        from greenbench.models.vae import VAE

        return VAE(
            image_size=image_size, channels=channels, width=width, latent_dim=latent_dim, lr=lr
        )
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
