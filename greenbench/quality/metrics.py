"""Sample-quality metrics in the feature space of a given extractor.

An *extractor* is any ``nn.Module`` that maps images ``(N, C, H, W)`` (float, in [-1, 1]) to
features ``(N, d)`` float32 and carries an int attribute ``num_features`` (``d``).

- ``kid_fid``: Kernel Inception Distance and Fréchet Inception Distance, computed by
  torchmetrics' own ``KernelInceptionDistance`` and ``FrechetInceptionDistance`` with the
  extractor as their feature network (never torchmetrics' default Inception weights).
- ``precision_recall``: improved precision and recall (Kynkäänniemi et al., 2019).
- ``density_coverage``: density and coverage (Naeem et al., 2020).
- ``memorisation``: share of samples that sit closer to a training image than that image's
  own nearest training neighbour does.
- ``score``: all of the above in one call, extracting each image set once.

Whether a higher score is better is declared once, with the record:
``greenbench.records.HIGHER_IS_BETTER``.

The nearest-neighbour metrics are pure functions of feature tensors. Distances are Euclidean,
computed exactly (no matrix-product shortcut) in float64 on the CPU, in row blocks so that
memory stays bounded for large sets (10,000 x 60,000 and beyond). A point on the boundary of a
k-NN ball counts as inside it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

DEFAULT_BATCH_SIZE = 512

# Largest distance block held at once, in float64 elements (2**24 elements = 128 MiB).
_BLOCK_ELEMENTS = 2**24
# Exact differences rather than |x|^2 + |y|^2 - 2xy: self-distances come out as 0 and ties stay
# ties; at d = 64 it costs little over the matrix-product form.
_EXACT_CDIST = "donot_use_mm_for_euclid_dist"
_KID_MEMORY_WARNING = "Metric `Kernel Inception Distance` will save all extracted features"


# ---------------------------------------------------------------------------------------------
# Features


def features(extractor: nn.Module, images: Tensor, batch_size: int = DEFAULT_BATCH_SIZE) -> Tensor:
    """Features ``(N, d)`` of ``images`` ``(N, C, H, W)``: float32 on the CPU.

    Runs the extractor without gradients, in eval mode (its previous mode is restored after),
    ``batch_size`` images at a time on the extractor's device.
    """
    _check_images("images", images)
    _check_positive_int("batch_size", batch_size)
    device = _module_device(extractor)
    parts = []
    with _eval_mode(extractor), torch.no_grad():
        for batch in images.split(batch_size):
            out = extractor(batch.to(device))
            if out.dim() != 2 or out.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"extractor must return (N, d) features, got shape {tuple(out.shape)} "
                    f"for a batch of {batch.shape[0]} images"
                )
            parts.append(out.detach().to("cpu", torch.float32))
    return torch.cat(parts)


# ---------------------------------------------------------------------------------------------
# KID and FID (torchmetrics)


def kid_fid(
    extractor: nn.Module,
    real_images: Tensor,
    fake_images: Tensor,
    seed: int = 0,
    subsets: int = 100,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, float]:
    """KID (mean and std over ``subsets`` random subsets) and FID of fake against real images.

    torchmetrics runs the extractor itself, passing the images through unchanged. KID's subset
    size is the smaller sample count, so small test sets work. Its random subsets are drawn
    from a CPU generator seeded with ``seed`` inside ``torch.random.fork_rng``: the result is
    reproducible and the caller's RNG state is left as it was.

    Returns ``{"kid": float, "kid_std": float, "fid": float}``.
    """
    _check_images("real_images", real_images)
    _check_images("fake_images", fake_images)
    return _torchmetrics_kid_fid(extractor, real_images, fake_images, seed, subsets, batch_size)


class _Precomputed(nn.Module):
    """Feature "network" for torchmetrics when the features are already computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, feats: Tensor) -> Tensor:
        return feats


def _torchmetrics_kid_fid(
    feature: nn.Module, real: Tensor, fake: Tensor, seed: int, subsets: int, batch_size: int
) -> dict[str, float]:
    """Feed ``real`` and ``fake`` through torchmetrics' KID and FID with ``feature`` as network."""
    _check_positive_int("subsets", subsets)
    _check_positive_int("batch_size", batch_size)
    for name, x in (("real", real), ("fake", fake)):
        if len(x) < 2:
            raise ValueError(f"KID and FID need at least 2 {name} samples, got {len(x)}")
    if not isinstance(getattr(feature, "num_features", None), int):
        # Without it torchmetrics' FID probes the network with a 3x299x299 uint8 image.
        raise ValueError("the extractor must have an int attribute `num_features`")

    device = _module_device(feature)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_KID_MEMORY_WARNING)
        # sync_on_compute off: these samples are this process's whole score, also on rank 0
        # of a point on several devices, whose other ranks are not scoring
        kid = KernelInceptionDistance(
            feature=feature, subsets=subsets, subset_size=min(len(real), len(fake)),
            normalize=False, sync_on_compute=False,
        )
    fid = FrechetInceptionDistance(feature=feature, normalize=False, sync_on_compute=False)
    kid.to(device)
    fid.to(device)

    with _eval_mode(feature), torch.no_grad():
        for is_real, data in ((True, real), (False, fake)):
            for batch in data.split(batch_size):
                batch = batch.to(device)
                kid.update(batch, real=is_real)
                fid.update(batch, real=is_real)
        # KID's subsets come from torch.randperm on the CPU default generator.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            kid_mean, kid_std = kid.compute()
        fid_value = fid.compute()
    return {"kid": float(kid_mean), "kid_std": float(kid_std), "fid": float(fid_value)}


# ---------------------------------------------------------------------------------------------
# Nearest-neighbour metrics (pure functions of features)


def precision_recall(real_feats: Tensor, fake_feats: Tensor, k: int = 5) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019).

    Precision: share of fake points inside at least one real point's k-NN ball. Recall: share
    of real points inside at least one fake point's k-NN ball. A k-NN ball is centred on a
    point with radius the distance to its k-th nearest other point of the same set.
    """
    _check_positive_int("k", k)
    real, fake = _check_pair("real_feats", real_feats, "fake_feats", fake_feats)
    _check_count("real_feats", real, k + 1, f" (k + 1 with k = {k})")
    _check_count("fake_feats", fake, k + 1, f" (k + 1 with k = {k})")
    precision = _ball_counts(fake, real, _knn_radii(real, k)) > 0
    recall = _ball_counts(real, fake, _knn_radii(fake, k)) > 0
    return _mean(precision), _mean(recall)


def density_coverage(real_feats: Tensor, fake_feats: Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al., 2020), both on the real points' k-NN balls.

    Density: ``1 / (k M)`` times the number of (fake, real ball) pairs with the fake point in
    the ball, over the ``M`` fake points; it is about 1 when the two sets share a distribution
    and can exceed 1. Coverage: share of real balls that hold at least one fake point.
    """
    _check_positive_int("k", k)
    real, fake = _check_pair("real_feats", real_feats, "fake_feats", fake_feats)
    _check_count("real_feats", real, k + 1, f" (k + 1 with k = {k})")
    _check_count("fake_feats", fake, 1)
    radii = _knn_radii(real, k)
    density = _ball_counts(fake, real, radii).sum().item() / (k * len(fake))
    coverage = _nearest_distances(real, fake) <= radii
    return density, _mean(coverage)


def memorisation(train_feats: Tensor, fake_feats: Tensor) -> float:
    """Share of fake points that sit on top of a training point.

    A fake point counts when its nearest training point is no farther from it than that training
    point's own nearest other training point (so a copy of a duplicated training image counts
    too). If several training points are equally nearest, one that qualifies is enough.
    """
    train, fake = _check_pair("train_feats", train_feats, "fake_feats", fake_feats)
    _check_count("train_feats", train, 2)
    _check_count("fake_feats", fake, 1)
    radii = _knn_radii(train, 1)
    memorised = torch.empty(len(fake), dtype=torch.bool)
    for start, dist in _distance_blocks(fake, train):
        nearest = dist.min(dim=1, keepdim=True).values
        hit = (dist == nearest) & (dist <= radii)
        memorised[start:start + len(dist)] = hit.any(dim=1)
    return _mean(memorised)


# ---------------------------------------------------------------------------------------------
# Everything at once


def score(
    extractor: nn.Module,
    real_images: Tensor,
    fake_images: Tensor,
    train_images: Tensor | None = None,
    seed: int = 0,
    k: int = 5,
    subsets: int = 100,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, float | None]:
    """All metrics of fake against real images, extracting each image set once.

    KID and FID go through torchmetrics on the extracted features, so they equal ``kid_fid``'s.
    ``memorisation`` is measured against ``train_images`` and is None without them.
    """
    real = features(extractor, real_images, batch_size)
    fake = features(extractor, fake_images, batch_size)
    result: dict[str, float | None] = dict(_torchmetrics_kid_fid(
        _Precomputed(real.shape[1]), real, fake, seed, subsets, batch_size
    ))
    result["precision"], result["recall"] = precision_recall(real, fake, k)
    result["density"], result["coverage"] = density_coverage(real, fake, k)
    result["memorisation"] = (
        None if train_images is None
        else memorisation(features(extractor, train_images, batch_size), fake)
    )
    return result


# ---------------------------------------------------------------------------------------------
# Helpers


def _distance_blocks(rows: Tensor, cols: Tensor) -> Iterator[tuple[int, Tensor]]:
    """``(start, cdist(rows[start:stop], cols))`` for row blocks of bounded size."""
    step = max(1, _BLOCK_ELEMENTS // len(cols))
    for start in range(0, len(rows), step):
        yield start, torch.cdist(rows[start:start + step], cols, compute_mode=_EXACT_CDIST)


def _knn_radii(points: Tensor, k: int) -> Tensor:
    """Distance from each point to its k-th nearest other point of the same set."""
    radii = torch.empty(len(points), dtype=torch.float64)
    for start, dist in _distance_blocks(points, points):
        rows = torch.arange(len(dist))
        dist[rows, start + rows] = float("inf")  # exclude the point itself
        radii[start:start + len(dist)] = dist.kthvalue(k, dim=1).values
    return radii


def _ball_counts(points: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """For each point, how many balls ``(centres[i], radii[i])`` contain it."""
    counts = torch.empty(len(points), dtype=torch.int64)
    for start, dist in _distance_blocks(points, centres):
        counts[start:start + len(dist)] = (dist <= radii).sum(dim=1)
    return counts


def _nearest_distances(points: Tensor, others: Tensor) -> Tensor:
    """For each point, the distance to its nearest point in ``others``."""
    nearest = torch.empty(len(points), dtype=torch.float64)
    for start, dist in _distance_blocks(points, others):
        nearest[start:start + len(dist)] = dist.min(dim=1).values
    return nearest


def _mean(flags: Tensor) -> float:
    return flags.double().mean().item()


def _check_feats(name: str, feats: Tensor) -> Tensor:
    if not isinstance(feats, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(feats).__name__}")
    if feats.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, d), got shape {tuple(feats.shape)}")
    out = feats.detach().to("cpu", torch.float64)
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def _check_pair(name_a: str, a: Tensor, name_b: str, b: Tensor) -> tuple[Tensor, Tensor]:
    a, b = _check_feats(name_a, a), _check_feats(name_b, b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b} differ in feature size: {a.shape[1]} vs {b.shape[1]}"
        )
    return a, b


def _check_count(name: str, feats: Tensor, needed: int, why: str = "") -> None:
    if len(feats) < needed:
        raise ValueError(f"{name} needs at least {needed} points{why}, got {len(feats)}")


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_images(name: str, images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a tensor (N, C, H, W), got {shape}")
    if len(images) == 0:
        raise ValueError(f"{name} is empty")


def _module_device(module: nn.Module) -> torch.device:
    """Device of the module's first parameter or buffer; the CPU if it has neither."""
    tensor = next(chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the block, then restore every submodule's mode."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
