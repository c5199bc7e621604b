"""The extractor's pinned recipe (``RECIPE``) and the training that follows it on the CPU."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

from greenbench.data import ImageData
from greenbench.quality.extractor.hashing import weights_sha256
from greenbench.quality.extractor.network import (
    BLOCKS,
    FEATURE_DIM,
    Extractor,
    FeatureExtractor,
    autocast_disabled,
)

log = logging.getLogger("greenbench.quality.extractor")

#: The fixed, versioned training recipe. JSON-serialisable; bump "version" on any change.
RECIPE: dict[str, Any] = {
    "version": 1,
    "architecture": {
        "blocks": [list(block) for block in BLOCKS],
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


def build(
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
    with isolated_from_caller():
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
def isolated_from_caller() -> Iterator[None]:
    """Keep the caller's CPU random stream and escape its inference mode or autocast."""
    with (
        torch.random.fork_rng(devices=[]),
        torch.inference_mode(False),
        torch.enable_grad(),
        autocast_disabled("cpu"),
    ):
        yield


def _cpu_copy(tensor: Tensor) -> Tensor:
    # A clone is never an inference tensor, so autograd can save it for backward.
    return tensor.detach().to("cpu").clone()


def _cpu_float_copy(tensor: Tensor) -> Tensor:
    return _cpu_copy(tensor).to(torch.float32)
