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

import contextlib
import copy
import hashlib
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from greenbench.data import ImageData
from greenbench.files import atomic_write

try:  # POSIX only; elsewhere the atomic renames alone keep the cache consistent.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ACCURACY_FLOOR",
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

log = logging.getLogger(__name__)

#: Width of the feature layer (the penultimate layer of the classifier).
FEATURE_DIM = 64

#: Minimum test accuracy for the feature-space metrics to be trusted, per dataset. Datasets not
#: listed have no floor unless the sweep sets one (``greenbench.harness`` applies it).
ACCURACY_FLOOR: dict[str, float] = {"digits": 0.95}

#: Environment variable that overrides the default cache folder.
CACHE_ENV = "GREENBENCH_CACHE"

# (output channels, stride) of each conv block.
_BLOCKS = ((32, 1), (64, 2), (128, 2))
_KERNEL_SIZE = 3

#: The fixed, versioned training recipe. JSON-serialisable; bump "version" on any change.
RECIPE: dict[str, Any] = {
    "version": 1,
    "architecture": {
        "blocks": [list(block) for block in _BLOCKS],
        "block": "conv3x3-batchnorm-relu",
        "pooling": "global-average",
        "feature_dim": FEATURE_DIM,
        "feature_activation": None,
    },
    "seed": 0,
    "optimizer": "adam",
    "lr": 2e-3,
    "betas": [0.9, 0.999],
    "weight_decay": 0.0,
    "lr_schedule": "cosine-per-step",
    "loss": "cross-entropy",
    "batch_size": 64,
    "epochs": 10,
    "max_steps": 3000,
    "augmentation": None,
    "device": "cpu",
    "dtype": "float32",
    "threads": 1,
    "deterministic_algorithms": True,
}

_EVAL_BATCH = 1024
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# --------------------------------------------------------------------------- the network


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
        for out_channels, stride in _BLOCKS:
            layers += [
                nn.Conv2d(
                    in_channels, out_channels, _KERNEL_SIZE, stride=stride,
                    padding=_KERNEL_SIZE // 2, bias=False, **factory,
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
        with _autocast_disabled(images.device.type):
            return self.embed(self.trunk(images.float()))

    def classify(self, images: Tensor) -> Tensor:
        """Class logits ``(N, num_classes)`` of ``images``."""
        features = self(images)
        with _autocast_disabled(features.device.type):
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


def _autocast_disabled(device_type: str) -> contextlib.AbstractContextManager[Any]:
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type without autocast support: nothing to disable
        return contextlib.nullcontext()


# --------------------------------------------------------------------------- public API


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
    root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    entry = _CacheEntry(root / "extractors", extractor_id(dataset, image_size, fingerprint))

    with _exclusive_lock(entry.lock):
        extractor = _load(entry, spec)
        if extractor is None:
            extractor = _build(entry.id, data, channels, image_size, num_classes)
            _save(entry, extractor, spec)
    return extractor


def cache_dir() -> Path:
    """The cache folder: ``$GREENBENCH_CACHE`` if set (and not empty), else ~/.cache/greenbench."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "greenbench"


_default_cache_dir = cache_dir  # load_or_build's argument shadows the name


def data_fingerprint(data: ImageData) -> str:
    """sha256 (hex) of the train images and labels: their dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    _hash_tensor(digest, "train_images", data.train_images)
    _hash_tensor(digest, "train_labels", data.train_labels)
    return digest.hexdigest()


def extractor_id(dataset: str, image_size: int, fingerprint: str) -> str:
    """Cache key, e.g. ``digits-16px-r1-0123456789abcdef`` (recipe version, fingerprint)."""
    return f"{dataset}-{image_size}px-r{RECIPE['version']}-{fingerprint[:16]}"


def weights_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """sha256 (hex) of a state dict: names in sorted order, each with dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        _hash_tensor(digest, name, state_dict[name])
    return digest.hexdigest()


# --------------------------------------------------------------------------- building


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


def _build(
    entry_id: str, data: ImageData, channels: int, image_size: int, num_classes: int
) -> Extractor:
    """Train a fresh extractor with the recipe and measure its test accuracy."""
    log.info("building feature extractor %s on the CPU", entry_id)
    started = time.perf_counter()
    with _pinned_torch_state(seed=RECIPE["seed"], threads=RECIPE["threads"]):
        module = FeatureExtractor(channels, image_size, num_classes)
        _train(module, _cpu_float_copy(data.train_images), _cpu_copy(data.train_labels))
        module.freeze()
        accuracy = _accuracy(module, _cpu_float_copy(data.test_images), data.test_labels)
    extractor = Extractor(
        module=module,
        id=entry_id,
        sha256=weights_sha256(module.state_dict()),
        accuracy=accuracy,
        recipe=copy.deepcopy(RECIPE),
    )
    log.info(
        "built feature extractor %s in %.1f s: test accuracy %.4f",
        entry_id, time.perf_counter() - started, accuracy,
    )
    return extractor


def _train(module: FeatureExtractor, images: Tensor, labels: Tensor) -> None:
    """The recipe's training loop: shuffled batches, Adam, cosine learning-rate decay."""
    count = images.shape[0]
    batch_size = RECIPE["batch_size"]
    total_steps = min(RECIPE["epochs"] * math.ceil(count / batch_size), RECIPE["max_steps"])
    optimizer = torch.optim.Adam(
        module.parameters(),
        lr=RECIPE["lr"],
        betas=tuple(RECIPE["betas"]),
        weight_decay=RECIPE["weight_decay"],
    )
    order = torch.Generator(device="cpu").manual_seed(RECIPE["seed"])
    module.train()
    step = 0
    while step < total_steps:
        permutation = torch.randperm(count, generator=order)
        for batch in permutation.split(batch_size):
            if step == total_steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = RECIPE["lr"] * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
            loss = functional.cross_entropy(module.classify(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1


def _accuracy(module: FeatureExtractor, images: Tensor, labels: Tensor) -> float:
    correct = 0
    with torch.no_grad():
        for batch_images, batch_labels in zip(
            images.split(_EVAL_BATCH), labels.split(_EVAL_BATCH), strict=True
        ):
            predictions = module.classify(batch_images).argmax(dim=1)
            correct += int((predictions == batch_labels.to(predictions.device)).sum())
    return correct / images.shape[0]


@contextlib.contextmanager
def _pinned_torch_state(seed: int, threads: int) -> Iterator[None]:
    """Seeded, single-threaded, deterministic, grad-enabled CPU torch; restored on exit."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with _isolated_from_caller():
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA streams are not touched
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(
                previous_deterministic, warn_only=previous_warn_only
            )
            torch.set_num_threads(previous_threads)


@contextlib.contextmanager
def _isolated_from_caller() -> Iterator[None]:
    """Keep the caller's CPU random stream and escape its inference mode or autocast."""
    with (
        torch.random.fork_rng(devices=[]),
        torch.inference_mode(False),
        torch.enable_grad(),
        _autocast_disabled("cpu"),
    ):
        yield


def _cpu_copy(tensor: Tensor) -> Tensor:
    # A clone is never an inference tensor, so autograd can save it for backward.
    return tensor.detach().to("cpu").clone()


def _cpu_float_copy(tensor: Tensor) -> Tensor:
    return _cpu_copy(tensor).to(torch.float32)


# --------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class _CacheEntry:
    folder: Path
    id: str

    @property
    def weights(self) -> Path:
        return self.folder / f"{self.id}.pt"

    @property
    def metadata(self) -> Path:
        return self.folder / f"{self.id}.json"

    @property
    def lock(self) -> Path:
        return self.folder / f"{self.id}.lock"


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; on failure warn and go on without it."""
    descriptor: int | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Read-only is enough for flock, and works in a shared cache that is not ours.
        descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
    except OSError as error:
        log.warning("cannot lock the extractor cache (%s); going on without the lock", error)
        if descriptor is not None:
            os.close(descriptor)
            descriptor = None
    try:
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)  # releases the lock


def _load(entry: _CacheEntry, spec: Mapping[str, Any]) -> Extractor | None:
    """The cached extractor, or None when the entry is missing or cannot be trusted."""
    if not entry.metadata.is_file():
        return None
    try:
        metadata = json.loads(entry.metadata.read_text(encoding="utf-8"))
        for key, expected in spec.items():
            if metadata.get(key) != expected:
                raise ValueError(f"{key} is {metadata.get(key)!r}, expected {expected!r}")
        accuracy = float(metadata["accuracy"])
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy {accuracy} is not in [0, 1]")
        with _isolated_from_caller():
            state = torch.load(entry.weights, map_location="cpu", weights_only=True)
            module = FeatureExtractor(spec["channels"], spec["image_size"], spec["num_classes"])
            module.load_state_dict(state)
        sha256 = weights_sha256(module.state_dict())
        if sha256 != metadata["sha256"]:
            raise ValueError("the weights do not match the sha256 in the JSON file")
    except Exception as error:  # anything wrong with an entry means: rebuild it
        log.warning(
            "ignoring the extractor cache entry %s (%s: %s); rebuilding it",
            entry.weights, type(error).__name__, error,
        )
        return None
    return Extractor(
        module=module.freeze(),
        id=entry.id,
        sha256=sha256,
        accuracy=accuracy,
        recipe=copy.deepcopy(RECIPE),
    )


def _save(entry: _CacheEntry, extractor: Extractor, spec: Mapping[str, Any]) -> None:
    """Write the entry (weights first, JSON last); warn instead of failing."""
    metadata = {
        "id": extractor.id,
        **spec,
        "sha256": extractor.sha256,
        "accuracy": extractor.accuracy,
        "torch": torch.__version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    state = extractor.module.state_dict()
    try:
        entry.folder.mkdir(parents=True, exist_ok=True)
        entry.metadata.unlink(missing_ok=True)  # a stale JSON must not vouch for new weights
        weights = io.BytesIO()
        torch.save(state, weights)
        atomic_write(entry.weights, weights.getvalue())
        atomic_write(entry.metadata, text.encode("utf-8"))
    except (OSError, RuntimeError) as error:
        log.warning(
            "cannot write the extractor cache entry %s (%s); using it from memory only",
            entry.metadata, error,
        )


# --------------------------------------------------------------------------- hashing


def _hash_tensor(digest: Any, name: str, tensor: Tensor) -> None:
    """Feed ``name``, dtype, shape and the raw bytes of ``tensor`` into ``digest``."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
    digest.update(flat.view(torch.uint8).numpy())
