"""Image datasets for the benchmarks: checked, loaded, scaled to ``[-1, 1]`` and subsampled.

Four small image-classification datasets are supported:

* ``digits``: scikit-learn's bundled 8x8 handwritten digits, split 80/20 with a fixed seed.
* ``mnist``, ``fashion-mnist`` and ``cifar10``: files in torchvision's on-disk layout under a
  root folder, read by ``greenbench.data.readers`` (never downloaded).

``inspect_dataset`` checks a dataset's name and root and reports its sizes cheaply, so that sweep
files can be validated before anything is trained. ``load_dataset`` returns float32 tensors
scaled to ``[-1, 1]`` and resized to the requested size. ``fraction_indices`` picks a
deterministic, class-stratified subset of a train split.

Importing this module is cheap on purpose: torch and scikit-learn are imported only inside the
functions that need them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from greenbench.data import readers
from greenbench.errors import UserError

if TYPE_CHECKING:
    import torch


DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
DEFAULT_IMAGE_SIZE = {"digits": 16, "mnist": 28, "fashion-mnist": 28, "cifar10": 32}

# digits: sizes of the fixed stratified 80/20 split of scikit-learn's 1,797 images.
_DIGITS_TRAIN_SIZE = 1437
_DIGITS_TEST_SIZE = 360
_DIGITS_NATIVE_SIZE = 8
_DIGITS_MAX_VALUE = 16.0
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    """What ``inspect_dataset`` found: split sizes and image geometry of one dataset."""

    name: str
    train_size: int
    test_size: int
    channels: int
    num_classes: int
    native_size: int


@dataclass(frozen=True)
class ImageData:
    """A loaded dataset: images ``(N, C, H, W)`` float32 in ``[-1, 1]``, labels int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


# --------------------------------------------------------------------------- public API


def inspect_dataset(name: str, root: str | Path | None) -> DatasetInfo:
    """Check that dataset ``name`` is readable under ``root`` and return its sizes.

    This is cheap: IDX files are checked by their headers and lengths only, CIFAR-10 batches are
    unpickled but not converted, and digits needs nothing at all.

    Raises:
        UserError: the name is unknown, the root is missing or wrong for the dataset, or a file
            is missing or malformed. The message is one line and names the path at fault.
    """
    _check_name(name)
    if name == "digits":
        _check_no_root(root)
        return DatasetInfo(
            name=name,
            train_size=_DIGITS_TRAIN_SIZE,
            test_size=_DIGITS_TEST_SIZE,
            channels=1,
            num_classes=readers.NUM_CLASSES,
            native_size=_DIGITS_NATIVE_SIZE,
        )
    base = _require_root(name, root)
    if name == "cifar10":
        train_size, test_size = readers.cifar_sizes(name, base)
        channels, native_size = readers.CIFAR_CHANNELS, readers.CIFAR_NATIVE_SIZE
    else:
        train_size, test_size = readers.idx_sizes(name, base)
        channels, native_size = 1, readers.IDX_NATIVE_SIZE
    return DatasetInfo(
        name=name,
        train_size=train_size,
        test_size=test_size,
        channels=channels,
        num_classes=readers.NUM_CLASSES,
        native_size=native_size,
    )


def load_dataset(name: str, root: str | Path | None, image_size: int) -> ImageData:
    """Load the full train split and the test split of ``name``, resized to ``image_size``.

    Raw values are mapped to ``[0, 1]``, resized with antialiased bilinear interpolation when
    ``image_size`` differs from the native size, clamped to ``[0, 1]`` and mapped to ``[-1, 1]``.
    The result depends only on the arguments. ``image_size`` is trusted (the caller validates it).

    Raises:
        UserError: as for ``inspect_dataset``, or when label values are out of range.
    """
    _check_name(name)
    if name == "digits":
        _check_no_root(root)
        raw = _load_digits()
    else:
        base = _require_root(name, root)
        raw = readers.load_cifar(name, base) if name == "cifar10" else readers.load_idx(name, base)

    import torch

    return ImageData(
        train_images=_to_unit_range_tensor(raw.train_images, raw.max_value, image_size),
        train_labels=torch.from_numpy(raw.train_labels.astype(np.int64)),
        test_images=_to_unit_range_tensor(raw.test_images, raw.max_value, image_size),
        test_labels=torch.from_numpy(raw.test_labels.astype(np.int64)),
    )


def subset_size(train_size: int, fraction: float) -> int:
    """Number of train images that ``fraction`` keeps: ``floor(fraction * train_size)``.

    A fraction of 1 or more keeps everything.

    Raises:
        ValueError: ``fraction`` is negative or NaN (callers validate user input first).
    """
    if not fraction >= 0:
        raise ValueError(f"fraction must be a number >= 0, got {fraction!r}")
    if fraction >= 1:
        return train_size
    return math.floor(fraction * train_size)


def fraction_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of a class-stratified subset of ``subset_size(len(labels), fraction)``.

    The total is shared across classes in proportion to their counts by the largest-remainder
    method (equal remainders go to the smaller class label first). Each class then draws its
    share from a permutation of ``np.random.default_rng(seed)``, classes in ascending label
    order, so the result depends only on ``(labels, fraction, seed)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    count = labels.shape[0]
    total = subset_size(count, fraction)
    if total >= count:
        return np.arange(count, dtype=np.int64)

    classes, class_counts = np.unique(labels, return_counts=True)
    shares = _largest_remainder_shares(class_counts.astype(np.int64), total)

    rng = np.random.default_rng(seed)
    picked = []
    for label, share in zip(classes, shares, strict=True):
        positions = np.flatnonzero(labels == label)
        picked.append(positions[rng.permutation(positions.shape[0])[:share]])
    return np.sort(np.concatenate(picked)).astype(np.int64)


# --------------------------------------------------------------------------- shared helpers


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise UserError(
            f"dataset.name: unknown dataset {name!r} (choose one of: {', '.join(DATASETS)})"
        )


def _check_no_root(root: str | Path | None) -> None:
    if root is not None:
        raise UserError("dataset.root: digits is bundled with scikit-learn and takes no root")


def _require_root(name: str, root: str | Path | None) -> Path:
    if root is None or str(root) == "":
        raise UserError(
            f"dataset.root: required for {name} (a folder in torchvision's layout, "
            f"e.g. {readers.layout_example(name)})"
        )
    return Path(root).expanduser()


def _to_unit_range_tensor(images: np.ndarray, max_value: float, image_size: int) -> torch.Tensor:
    """Scale ``(N, C, H, W)`` raw images to ``[0, 1]``, resize, clamp and map to ``[-1, 1]``."""
    import torch
    from torch.nn import functional

    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)) / max_value
    if tensor.shape[-1] != image_size or tensor.shape[-2] != image_size:
        tensor = functional.interpolate(
            tensor,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    return tensor.clamp_(0.0, 1.0).mul_(2.0).sub_(1.0).contiguous()


def _largest_remainder_shares(class_counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` across classes in proportion to ``class_counts`` (largest remainder)."""
    grand_total = int(class_counts.sum())
    exact = class_counts * total  # exact share of class i is exact[i] / grand_total
    shares = exact // grand_total
    remainders = exact % grand_total
    missing = total - int(shares.sum())
    # Stable sort on the negated remainders: biggest first, ties in class label order.
    order = np.argsort(-remainders, kind="stable")
    shares[order[:missing]] += 1
    return shares


# --------------------------------------------------------------------------- digits


def _load_digits() -> readers.RawSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)[:, np.newaxis, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_positions, test_positions = train_test_split(
        np.arange(labels.shape[0]),
        test_size=_DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=_DIGITS_SPLIT_SEED,
    )
    # Keep each split in the bundle's original order; membership is what the seed fixes.
    train_positions = np.sort(train_positions)
    test_positions = np.sort(test_positions)
    return readers.RawSplits(
        train_images=images[train_positions],
        train_labels=labels[train_positions],
        test_images=images[test_positions],
        test_labels=labels[test_positions],
        max_value=_DIGITS_MAX_VALUE,
    )
