"""The extractor's network: a small CNN classifier whose penultimate layer gives the features,
and ``Extractor``, a trained and frozen one with what identifies it in run records."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

#: Width of the feature layer (the penultimate layer of the classifier).
FEATURE_DIM = 64

# (output channels, stride) of each conv block.
BLOCKS = ((32, 1), (64, 2), (128, 2))
KERNEL_SIZE = 3


class FeatureExtractor(nn.Module):
    """Small CNN classifier whose penultimate layer gives ``FEATURE_DIM`` features.

    ``forward`` maps images ``(N, channels, image_size, image_size)``, float in ``[-1, 1]``, to
    float32 features ``(N, FEATURE_DIM)``; ``classify`` maps them to logits
    ``(N, num_classes)``. Parameters are created on the CPU in float32 whatever torch's defaults.
    """

    def __init__(self, channels: int, image_size: int, num_classes: int = 10) -> None:
        super().__init__()
        if channels < 1 or image_size < 1 or num_classes < 2:
            raise ValueError(
                f"need channels >= 1, image_size >= 1 and num_classes >= 2, got "
                f"channels={channels}, image_size={image_size}, num_classes={num_classes}"
            )
        self.channels = channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.num_features = FEATURE_DIM  # torchmetrics reads this instead of probing the network
        self._frozen = False

        factory: dict[str, Any] = {"device": "cpu", "dtype": torch.float32}
        layers: list[nn.Module] = []
        in_channels = channels
        for out_channels, stride in BLOCKS:
            layers += [
                nn.Conv2d(
                    in_channels, out_channels, KERNEL_SIZE, stride=stride,
                    padding=KERNEL_SIZE // 2, bias=False, **factory,
                ),
                nn.BatchNorm2d(out_channels, **factory),
                nn.ReLU(),
            ]
            in_channels = out_channels
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.trunk = nn.Sequential(*layers)
        self.embed = nn.Linear(in_channels, FEATURE_DIM, **factory)
        self.head = nn.Linear(FEATURE_DIM, num_classes, **factory)

    def forward(self, images: Tensor) -> Tensor:
        """Features ``(N, FEATURE_DIM)`` of ``images``: the feature layer, no activation."""
        self._check_images(images)
        with autocast_disabled(images.device.type):
            return self.embed(self.trunk(images.float()))

    def classify(self, images: Tensor) -> Tensor:
        """Class logits ``(N, num_classes)`` of ``images``."""
        features = self(images)
        with autocast_disabled(features.device.type):
            return self.head(features)

    def freeze(self) -> FeatureExtractor:
        """Switch to eval mode for good and stop gradients; returns ``self``."""
        self.requires_grad_(False)
        self._frozen = True
        return super().train(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """As ``nn.Module.train``, except that a frozen extractor stays in eval mode."""
        return super().train(mode and not self._frozen)

    def _check_images(self, images: Tensor) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"expected images of shape (N, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [-1, 1], got dtype {images.dtype}")


def autocast_disabled(device_type: str) -> contextlib.AbstractContextManager[Any]:
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type without autocast support: nothing to disable
        return contextlib.nullcontext()


@dataclass(frozen=True)
class Extractor:
    """A pinned, frozen feature extractor and what identifies it in run records."""

    module: FeatureExtractor
    id: str
    sha256: str
    accuracy: float
    recipe: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """``{"id", "sha256", "accuracy", "recipe"}`` for a run record (a copy)."""
        return {
            "id": self.id,
            "sha256": self.sha256,
            "accuracy": self.accuracy,
            "recipe": copy.deepcopy(self.recipe),
        }
