"""The pinned feature extractor: a small CNN classifier trained on the benchmark dataset itself.

Sample-quality metrics (KID, FID, precision/recall, ...) compare real and generated images in
the feature space of a network. torchmetrics would download Inception-v3 weights for that, and
Inception features say little about 16x16 digits, so greenbench trains its own small classifier
on the dataset's train split and uses its penultimate layer instead. For the scores to stay
comparable across runs, the extractor is *pinned*: everything that decides its weights is fixed.

The network (:class:`FeatureExtractor`)
    Three conv blocks (3x3 convolution, batch norm, ReLU) with 32, 64 and 128 channels and
    strides 1, 2 and 2, global average pooling, then a linear layer to ``FEATURE_DIM`` (64)
    features and a linear classifier head on top. Global pooling makes it work for any image
    size (8 to 64 pixels are the intended range) and any channel count. The features are the
    output of the 64-unit linear layer *without* an activation: a ReLU would put a point mass
    at zero in every unit and can leave dead units with zero variance, which makes the Fréchet
    covariances singular. 64 features stay well below the 360 images of the digits test split.
    Once trained the module is frozen: eval mode, no gradients, and ``train()`` no longer
    switches batch norm back to training mode (a parent LightningModule or torchmetrics metric
    may call it). ``forward`` runs in float32 with autocast disabled, so the features do not
    depend on the training run's precision.

The recipe (:data:`RECIPE`)
    Seed 0, Adam (lr 2e-3) with a per-step cosine decay to zero, batch size 64, 10 epochs capped
    at 3000 steps (the digits build takes a few seconds; MNIST and CIFAR-10 builds stay at a
    few minutes instead of an hour), cross-entropy, no augmentation. Training always runs on
    the CPU, in float32, on one thread, with ``torch.use_deterministic_algorithms(True)``, with
    the batch order drawn from its own seeded generator: building twice gives bit-identical
    weights, whatever accelerator, precision or thread count the benchmark run uses. (Different
    CPUs or torch builds may still differ in the last bits, which is why every record carries the
    weights' sha256.) The build leaves the caller's global state as it found it: the CPU random
    stream, the thread count, the determinism flag and the grad/inference mode. Any change to the
    architecture or the recipe must bump ``RECIPE["version"]``, which is part of the cache key.

The cache
    ``<cache_dir>/extractors/<id>.pt`` holds the state dict (``torch.save``) and ``<id>.json``
    the accuracy, the weights' sha256, the recipe and what the entry was built from. The id,
    e.g. ``digits-16px-r1-0123456789abcdef``, names the dataset, the image size, the recipe
    version and the first 16 hex digits of :func:`data_fingerprint` (a user's MNIST folder may
    differ from another's). Loading uses ``torch.load(weights_only=True)`` and checks the
    weights against the sha256 in the JSON; an entry that is damaged, mismatched or unreadable
    is rebuilt, never trusted. Concurrent builders are serialised by an exclusive ``flock`` on
    ``<id>.lock`` held around check-build-write, so the second process waits and then loads the
    first one's entry. Files are written under temporary names in the same folder and moved
    into place with ``os.replace``, weights first and JSON last: a JSON file means complete
    weights. A cache that cannot be locked, read or written costs a warning, never the run: the
    extractor is then built in memory and returned anyway.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import Tensor

from greenbench.data import ImageData
from greenbench.quality.extractor import cache
from greenbench.quality.extractor.cache import CACHE_ENV, cache_dir
from greenbench.quality.extractor.hashing import data_fingerprint, weights_sha256
from greenbench.quality.extractor.network import FEATURE_DIM, Extractor, FeatureExtractor
from greenbench.quality.extractor.recipe import RECIPE, build

__all__ = [
    "ACCURACY_FLOOR",
    "CACHE_ENV",
    "FEATURE_DIM",
    "RECIPE",
    "Extractor",
    "FeatureExtractor",
    "cache_dir",
    "data_fingerprint",
    "extractor_id",
    "load_or_build",
    "weights_sha256",
]

#: Minimum test accuracy for the feature-space metrics to be trusted, per dataset. Datasets not
#: listed have no floor unless the sweep sets one (``greenbench.point.run`` applies it).
ACCURACY_FLOOR: dict[str, float] = {"digits": 0.95}

_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def load_or_build(
    dataset: str,
    image_size: int,
    data: ImageData,
    cache_dir: str | Path | None = None,
) -> Extractor:
    """The pinned extractor for ``data``: loaded from the cache, or trained and cached.

    ``cache_dir`` defaults to :func:`cache_dir`. The module comes back frozen, on the CPU, in
    float32. Problems with the cache are logged as warnings and never raised.

    Raises:
        ValueError: ``dataset`` is not a plain name, or ``data`` is not ``image_size`` square
            images with labels in ``[0, num_classes)``.
    """
    if not _DATASET_NAME.fullmatch(dataset):
        raise ValueError(f"dataset must be a plain name (letters, digits, . _ -), got {dataset!r}")
    channels, num_classes = _check_data(data, image_size)
    fingerprint = data_fingerprint(data)
    spec = {
        "dataset": dataset,
        "image_size": image_size,
        "channels": channels,
        "num_classes": num_classes,
        "fingerprint": fingerprint,
        "recipe": RECIPE,
    }
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache.cache_dir()
    entry = cache.CacheEntry(root / "extractors", extractor_id(dataset, image_size, fingerprint))

    with cache.exclusive_lock(entry.lock):
        extractor = cache.load(entry, spec)
        if extractor is None:
            extractor = build(entry.id, data, channels, image_size, num_classes)
            cache.save(entry, extractor, spec)
    return extractor


def extractor_id(dataset: str, image_size: int, fingerprint: str) -> str:
    """Cache key, e.g. ``digits-16px-r1-0123456789abcdef`` (recipe version, fingerprint)."""
    return f"{dataset}-{image_size}px-r{RECIPE['version']}-{fingerprint[:16]}"


def _check_data(data: ImageData, image_size: int) -> tuple[int, int]:
    """Channel and class counts of ``data``, after checking its shapes and labels."""
    for split in ("train", "test"):
        images: Tensor = getattr(data, f"{split}_images")
        labels: Tensor = getattr(data, f"{split}_labels")
        if images.dim() != 4 or tuple(images.shape[2:]) != (image_size, image_size):
            raise ValueError(
                f"{split}_images must have shape (N, C, {image_size}, {image_size}), "
                f"got {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"{split}_labels must be {images.shape[0]} integer labels, "
                f"got {labels.dtype} of shape {tuple(labels.shape)}"
            )
        if images.shape[0] == 0:
            raise ValueError(f"{split} split is empty")
    if data.train_images.shape[1] != data.test_images.shape[1]:
        raise ValueError("train and test images have different channel counts")
    num_classes = max(int(data.train_labels.max()) + 1, 2)
    for split, labels in (("train", data.train_labels), ("test", data.test_labels)):
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"{split} labels must lie in [0, {num_classes}) (the train classes)")
    return int(data.train_images.shape[1]), num_classes
