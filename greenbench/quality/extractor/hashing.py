"""Fingerprints: of training data (part of an extractor's cache key) and of weights (in every
record, so numbers from different extractors are never mistaken for comparable ones)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from greenbench.data import ImageData


def data_fingerprint(data: ImageData) -> str:
    """sha256 (hex) of the train images and labels: their dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    _hash_tensor(digest, "train_images", data.train_images)
    _hash_tensor(digest, "train_labels", data.train_labels)
    return digest.hexdigest()


def weights_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """sha256 (hex) of a state dict: names in sorted order, each with dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        _hash_tensor(digest, name, state_dict[name])
    return digest.hexdigest()


def _hash_tensor(digest: Any, name: str, tensor: Tensor) -> None:
    """Feed ``name``, dtype, shape and the raw bytes of ``tensor`` into ``digest``."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
    digest.update(flat.view(torch.uint8).numpy())
