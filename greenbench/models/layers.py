"""Convolutional building blocks shared by the reference GAN and VAE.

Both reference models are DCGAN-style: an *up-sampling decoder* turns a latent vector into an
image (the GAN generator, the VAE decoder) and a *down-sampling encoder* turns an image into a
small feature map (the GAN discriminator, the VAE encoder). The two stacks are mirror images
and are derived from one plan so that every image size from 8 to 64 pixels works, including
odd sizes such as 28 (MNIST) or 9.

The plan has two parts:

* :func:`size_chain` lists the spatial sizes of the feature maps, from the smallest (at most
  4 pixels) up to the image. Each size is the ceiling of half the next one, so every step is a
  stride-2 convolution: kernel 4 when the size exactly doubles, kernel 3 when the larger size is
  odd (``2 * n - 1``). With padding 1 these give exactly the sizes in the chain in both
  directions.
* :func:`channel_plan` gives the hidden channel count at each position of the chain. As in
  DCGAN the smallest map is the widest and each doubling of the size halves the channels
  (64x64 images: 512-256-128-64). The ``width`` multiplier scales every hidden channel count,
  so the FLOPs of the hidden-to-hidden convolutions scale with ``width ** 2``.

:func:`dcgan_init` applies the DCGAN initialisation (conv weights ~ N(0, 0.02), batch-norm
weights ~ N(1, 0.02), biases 0) and :func:`adam_eps` picks an Adam epsilon that survives
float16 parameters.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

#: Base hidden channel count at ``width == 1.0``; the widest layer has ``base * 2**(n-1)``.
BASE_CHANNELS = 64

#: The first feature map of the decoder (and last of the encoder) is at most this large.
MAX_FIRST_SIZE = 4


def size_chain(image_size: int) -> list[int]:
    """Spatial sizes of the feature maps from the smallest up to ``image_size``.

    Built by halving ``image_size`` (rounding up) until the size is at most 4, then reversed:
    ``size_chain(28) == [4, 7, 14, 28]`` and ``size_chain(9) == [3, 5, 9]``.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    sizes = [image_size]
    while sizes[-1] > MAX_FIRST_SIZE:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes[::-1]


def channel_plan(width: float, n_layers: int) -> list[int]:
    """Hidden channel counts of the ``n_layers`` hidden feature maps, smallest map first.

    With ``base = max(1, round(64 * width))`` the map at chain position ``i`` has
    ``base * 2 ** (n_layers - 1 - i)`` channels, e.g. ``channel_plan(1.0, 4) == [512, 256, 128,
    64]``.
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if n_layers < 1:
        raise ValueError(f"n_layers must be at least 1, got {n_layers}")
    base = max(1, round(BASE_CHANNELS * width))
    return [base * 2 ** (n_layers - 1 - i) for i in range(n_layers)]


def _stack_plan(image_size: int, width: float) -> tuple[list[int], list[int]]:
    """The size chain and hidden channel plan of a stack; needs at least one hidden map."""
    chain = size_chain(image_size)
    if len(chain) < 2:
        raise ValueError(
            f"image_size must be larger than {MAX_FIRST_SIZE} pixels, got {image_size}"
        )
    return chain, channel_plan(width, len(chain) - 1)


def _kernel_for(small: int, large: int) -> int:
    """Kernel size of a stride-2, padding-1 (transposed) conv between two chain sizes."""
    if large == 2 * small:
        return 4
    if large == 2 * small - 1:
        return 3
    raise ValueError(f"sizes {small} and {large} are not one stride-2 step apart")


class DecoderStack(nn.Module):
    """Up-sampling stack: latent vector ``(B, latent_dim)`` to image ``(B, C, H, W)``.

    The latent vector is read as a 1x1 map and projected by a transposed convolution with a
    kernel as large as the first feature map. Each following step doubles the size with a
    stride-2 transposed convolution. Hidden layers use batch norm and ReLU (so their convs have
    no bias); the last layer maps to the image channels, has a bias and no batch norm, and is
    followed by ``final_activation`` (``nn.Tanh()`` for the GAN, ``None`` for the VAE).
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        latent_dim: int,
        width: float = 1.0,
        final_activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        chain, hidden = _stack_plan(image_size, width)
        self.latent_dim = latent_dim
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, hidden[0], kernel_size=chain[0], bias=False),
            nn.BatchNorm2d(hidden[0]),
            nn.ReLU(inplace=True),
        ]
        out_channels = [*hidden[1:], channels]
        for step, (small, large) in enumerate(itertools.pairwise(chain)):
            is_last = step == len(chain) - 2
            layers.append(
                nn.ConvTranspose2d(
                    hidden[step],
                    out_channels[step],
                    kernel_size=_kernel_for(small, large),
                    stride=2,
                    padding=1,
                    bias=is_last,
                )
            )
            if not is_last:
                layers += [nn.BatchNorm2d(out_channels[step]), nn.ReLU(inplace=True)]
        if final_activation is not None:
            layers.append(final_activation)
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class EncoderStack(nn.Module):
    """Down-sampling stack: image ``(B, C, H, W)`` to feature map ``(B, C0, s0, s0)``.

    The mirror of :class:`DecoderStack`: stride-2 convolutions (kernel 4 on even input sizes,
    3 on odd ones) with LeakyReLU(0.2), batch norm on every convolution but the first. ``C0``
    and ``s0`` are available as :attr:`out_channels` and :attr:`out_size`.
    """

    def __init__(self, image_size: int, channels: int, width: float = 1.0) -> None:
        super().__init__()
        chain, hidden = _stack_plan(image_size, width)
        self.out_channels = hidden[0]
        self.out_size = chain[0]
        layers: list[nn.Module] = []
        # Walk from the image (chain position n) down to the smallest map: i + 1 -> i.
        for i in reversed(range(len(hidden))):
            first = i == len(hidden) - 1
            layers.append(
                nn.Conv2d(
                    channels if first else hidden[i + 1],
                    hidden[i],
                    kernel_size=_kernel_for(chain[i], chain[i + 1]),
                    stride=2,
                    padding=1,
                    bias=first,
                )
            )
            if not first:
                layers.append(nn.BatchNorm2d(hidden[i]))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def adam_eps(dtype: torch.dtype) -> float:
    """Adam's ``eps`` for parameters of ``dtype``: the usual 1e-8, or 1e-4 for float16.

    Under ``16-true`` the parameters and hence Adam's moment estimates are float16, where
    1e-8 rounds to zero and small squared gradients underflow; a zero denominator turns the
    very first update into inf/NaN. 1e-4 is a normal float16 number that keeps the update
    bounded. bfloat16 has float32's exponent range and keeps the default.
    """
    return 1e-4 if dtype == torch.float16 else 1e-8


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation for one module; use as ``model.apply(dcgan_init)``.

    Convolution and transposed-convolution weights ~ N(0, 0.02); batch-norm weights
    ~ N(1, 0.02); their biases 0. Other modules keep PyTorch's default initialisation.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, mean=1.0, std=0.02)
        nn.init.zeros_(module.bias)


def decode_prior(
    model: nn.Module,
    decode: Callable[[torch.Tensor], torch.Tensor],
    latent_dim: int,
    n: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``decode`` applied to ``n`` standard-normal latent codes, as float32.

    The codes are drawn on the CPU from ``generator`` (so a seeded generator gives the same
    images on any device), then moved to the model's device and dtype. ``model`` runs in eval
    mode (batch norm uses its running statistics) without gradients; its mode is restored.
    """
    param = next(model.parameters())
    z = torch.randn(n, latent_dim, generator=generator)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            decoded = decode(z.to(device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    return decoded.float()
