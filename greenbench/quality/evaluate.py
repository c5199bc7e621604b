"""Scoring a model once: its samples against the test split, and, for the VAE, its likelihood.

``evaluate`` draws ``num_samples`` samples with a seeded generator and scores them in the
feature space of the pinned extractor (KID, FID, precision, recall, density, coverage, and
memorisation against the training images the model saw). For the VAE it adds the test-set
negative ELBO, the importance-weighted NLL (nats and bits per dimension) and the
reconstruction MSE, computed on a float32 copy of the model whatever the training precision.

All randomness comes from ``seed`` inside ``torch.random.fork_rng``: scoring the same model
twice gives the same numbers, and scoring in the middle of training leaves the training's own
random stream untouched.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch

from greenbench.quality import metrics
from greenbench.quality.extractor import Extractor

LIKELIHOOD_BATCH = 128  # test images per importance-sampling batch


@dataclass(frozen=True)
class EvalSettings:
    num_samples: int = 1000
    importance_samples: int = 16
    seed: int = 0


@dataclass(frozen=True)
class EvalData:
    """CPU float32 images in [-1, 1]: the test split, and the training images the model saw."""

    test_images: torch.Tensor
    train_images: torch.Tensor


def evaluate(
    model: torch.nn.Module,
    data: EvalData,
    extractor: Extractor | None,
    settings: EvalSettings,
) -> tuple[dict[str, Any], torch.Tensor, str | None]:
    """Scores of ``model``, the samples they were computed on (CPU float32), and why the
    image metrics were not computed when ``sample(n)`` gave no images (``not_images``)."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        drawn = _sample(model, settings.num_samples, generator)
        problem = not_images(drawn, settings.num_samples)
        if problem is not None:
            samples = drawn.detach().cpu() if isinstance(drawn, torch.Tensor) else torch.empty(0)
            return {}, samples, problem
        samples = drawn.cpu().float()
        scores: dict[str, Any] = {}
        if not torch.isfinite(samples).all():
            return scores, samples, None
        if extractor is not None:
            scores.update(metrics.score(
                extractor.module, data.test_images, samples, data.train_images,
                seed=settings.seed,
            ))
        if hasattr(model, "importance_nll"):
            scores.update(likelihood(model, data.test_images, settings))
    return scores, samples, None


def not_images(samples: Any, count: int) -> str | None:
    """Why ``samples``, what ``sample(count)`` returned, are not ``count`` images ``(N, C, H,
    W)`` of floating point values in [-1, 1] (a generous rounding aside); None when they are.
    Language models sample token ids, classifiers may sample labels: any of these is fine to
    sample and to time, only not to score as images.

    >>> not_images(torch.zeros(4, 1, 8, 8), 4) is None, not_images(torch.zeros(4, 16), 4)
    (True, 'sample(n) returned a tensor of shape (4, 16), not (N, C, H, W) images')
    """
    if not isinstance(samples, torch.Tensor):
        return f"sample(n) returned a {type(samples).__name__}, not a tensor of images"
    shape = tuple(samples.shape)
    if samples.dim() != 4:
        return f"sample(n) returned a tensor of shape {shape}, not (N, C, H, W) images"
    if shape[0] != count:
        return f"sample({count}) returned {shape[0]} images"
    if not samples.is_floating_point():
        return f"sample(n) returned {samples.dtype} values, not images in [-1, 1]"
    finite = samples[torch.isfinite(samples)]
    if finite.numel() and (finite.min() < -1.01 or finite.max() > 1.01):
        return (f"sample(n) returned values from {float(finite.min()):.3g} to "
                f"{float(finite.max()):.3g}, not images in [-1, 1]")
    return None


@torch.no_grad()
def _sample(model: torch.nn.Module, count: int, generator: torch.Generator) -> torch.Tensor:
    """``model.sample(count)``, with the seeded generator when ``sample`` takes one (the
    reference models do; a user's ``sample(n)`` draws from the seeded global stream)."""
    if "generator" in inspect.signature(model.sample).parameters:
        return model.sample(count, generator=generator)
    return model.sample(count)


@torch.no_grad()
def likelihood(model: torch.nn.Module, images: torch.Tensor, settings: EvalSettings) -> dict:
    """Test-set negative ELBO, importance-weighted NLL and reconstruction MSE of a VAE."""
    device = next(model.parameters()).device
    vae = copy.deepcopy(model).float().eval()
    generator = torch.Generator().manual_seed(settings.seed)
    elbo, nll, squared_error = 0.0, 0.0, 0.0
    for batch in images.split(LIKELIHOOD_BATCH):
        x = batch.to(device=device, dtype=torch.float32)
        recon_nll, kl = vae.negative_elbo(x)
        elbo += float((recon_nll + kl).sum())
        nll += float(vae.importance_nll(x, settings.importance_samples, generator).sum())
        squared_error += float((vae(x) - x).square().sum())
    count, dims = len(images), images[0].numel()
    nll_nats = nll / count
    return {
        "elbo_nats": elbo / count,
        "nll_nats": nll_nats,
        "nll_bits_per_dim": nll_nats / (dims * math.log(2)),
        "recon_mse": squared_error / (count * dims),
    }
