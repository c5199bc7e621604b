"""Tests for greenbench.quality.metrics on small inputs whose answers are known exactly."""

from __future__ import annotations

import socket

import pytest
import torch
from torch import Tensor, nn

from greenbench.quality import metrics
from greenbench.records import HIGHER_IS_BETTER


def col(*values: float) -> Tensor:
    """1-D points as an (N, 1) feature tensor."""
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1)


class Projection(nn.Module):
    """Fixed random linear projection of flattened images; counts calls and images seen."""

    def __init__(self, in_features: int = 16, num_features: int = 8) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1234)
        weight = torch.randn(in_features, num_features, generator=generator) / in_features**0.5
        self.register_buffer("weight", weight)
        self.num_features = num_features
        self.calls = 0
        self.images_seen = 0
        self.modes: list[bool] = []

    def forward(self, images: Tensor) -> Tensor:
        self.calls += 1
        self.images_seen += len(images)
        self.modes.append(self.training)
        return images.flatten(1).float() @ self.weight


def gaussian_images(n: int, seed: int, shift: float = 0.0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=generator) * 0.3 + shift


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection or download weights fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


# --- precision / recall ----------------------------------------------------------------------


def test_precision_recall_identical_sets() -> None:
    feats = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    assert metrics.precision_recall(feats, feats.clone(), k=3) == (1.0, 1.0)


def test_precision_recall_far_apart() -> None:
    real = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    assert metrics.precision_recall(real, real + 1000.0, k=3) == (0.0, 0.0)


def test_precision_recall_hand_built() -> None:
    # k = 1. Real radii: 0->1, 1->1, 2->1, 3->1, 10->7. Fake radii: 0->0.5, 0.5->0.5, 17->13,
    # 30->13. Precision: fakes 0, 0.5 (real balls at 0/1) and 17 (|17 - 10| = 7, on the boundary
    # of real 10's ball) are in; 30 is not: 3/4. Recall: reals 0 and 1 (|1 - 0.5| = 0.5, on the
    # boundary) lie in fake 0.5's ball, 10 in fake 17's ball [4, 30]; 2 and 3 in none: 3/5.
    real = col(0, 1, 2, 3, 10)
    fake = col(0, 0.5, 17, 30)
    assert metrics.precision_recall(real, fake, k=1) == (0.75, 0.6)
    # Swapping the sets swaps the two numbers.
    assert metrics.precision_recall(fake, real, k=1) == (0.6, 0.75)


def test_precision_recall_2d_square() -> None:
    # Four real corners of a unit square, k = 2: every radius is 1 (the two adjacent corners).
    # Fake: the centre (distance 0.707 to all corners), a point 1 right of a corner (on the
    # boundary) and two far points: precision 2/4.
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    fake = torch.tensor([[0.5, 0.5], [2.0, 0.0], [50.0, 50.0], [60.0, 50.0]])
    precision, _ = metrics.precision_recall(real, fake, k=2)
    assert precision == 0.5


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_precision_recall_rejects_bad_k(k: object) -> None:
    feats = torch.randn(10, 2)
    with pytest.raises(ValueError, match="k must be a positive int"):
        metrics.precision_recall(feats, feats, k=k)  # type: ignore[arg-type]


def test_precision_recall_needs_k_plus_one_points() -> None:
    with pytest.raises(ValueError, match=r"real_feats needs at least 6 points \(k \+ 1"):
        metrics.precision_recall(torch.randn(5, 2), torch.randn(10, 2), k=5)
    with pytest.raises(ValueError, match="fake_feats needs at least 6 points"):
        metrics.precision_recall(torch.randn(10, 2), torch.randn(5, 2), k=5)


def test_feature_validation() -> None:
    with pytest.raises(ValueError, match="real_feats must be 2-D"):
        metrics.precision_recall(torch.randn(10), torch.randn(10, 1), k=1)
    with pytest.raises(ValueError, match="differ in feature size: 3 vs 2"):
        metrics.density_coverage(torch.randn(10, 3), torch.randn(10, 2), k=1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.memorisation(torch.randn(10, 2), torch.full((3, 2), float("nan")))
    with pytest.raises(ValueError, match="train_feats needs at least 2 points"):
        metrics.memorisation(torch.randn(1, 2), torch.randn(3, 2))


# --- density / coverage ----------------------------------------------------------------------


def test_density_coverage_identical_sets() -> None:
    # k = 2, radii 0->3, 1->2, 3->3, 7->6, 15->12. Each ball holds its centre and exactly its
    # k nearest neighbours (no ties beyond the k-th), so every fake point, summed over balls,
    # gives 5 * (k + 1) = 15 hits: density 15 / (k * 5) = 1.5; every ball holds its own copy.
    feats = col(0, 1, 3, 7, 15)
    assert metrics.density_coverage(feats, feats.clone(), k=2) == (1.5, 1.0)


def test_density_counts_boundary_ties() -> None:
    # k = 1, radii all 1; the middle ball [0, 2] holds all three points: 2 + 3 + 2 = 7 hits.
    feats = col(0, 1, 2)
    density, coverage = metrics.density_coverage(feats, feats.clone(), k=1)
    assert density == pytest.approx(7 / 3)
    assert coverage == 1.0


def test_density_coverage_same_distribution_near_one() -> None:
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 2, generator=generator, dtype=torch.float64)
    fake = torch.randn(2000, 2, generator=generator, dtype=torch.float64)
    density, coverage = metrics.density_coverage(real, fake, k=5)
    assert density == pytest.approx(1.0, abs=0.1)
    assert coverage > 0.9


def test_density_coverage_hand_built() -> None:
    # Real as above (k = 2, radii 3, 2, 3, 6, 12). Fake 2 lies in the balls of 0, 1, 3 and 7
    # (|2 - 15| = 13 > 12); fakes 100 and 200 in none. Density 4 / (2 * 3); coverage 4/5.
    density, coverage = metrics.density_coverage(col(0, 1, 3, 7, 15), col(2, 100, 200), k=2)
    assert density == pytest.approx(2 / 3)
    assert coverage == 0.8


def test_density_coverage_far_apart() -> None:
    real = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
    assert metrics.density_coverage(real, real + 1000.0, k=3) == (0.0, 0.0)


def test_density_coverage_needs_k_plus_one_real_points() -> None:
    with pytest.raises(ValueError, match="real_feats needs at least 4 points"):
        metrics.density_coverage(torch.randn(3, 2), torch.randn(10, 2), k=3)


# --- memorisation ----------------------------------------------------------------------------

# Training points and their nearest-other-neighbour distances: 0->1, 1->1, 3->2, 7->4, 15->8.
TRAIN = col(0, 1, 3, 7, 15)


def test_memorisation_copies() -> None:
    assert metrics.memorisation(TRAIN, TRAIN[[4, 0, 2, 2]].clone()) == 1.0


def test_memorisation_far_away() -> None:
    assert metrics.memorisation(TRAIN, TRAIN + 1000.0) == 0.0


def test_memorisation_mixed() -> None:
    # 0: copy. 3.5: nearest 3 at 0.5 <= 2. 5.5: nearest 7 at 1.5 <= 4. 24: nearest 15 at 9 > 8.
    # 40: nearest 15 at 25 > 8. Three of five.
    assert metrics.memorisation(TRAIN, col(0, 3.5, 5.5, 24, 40)) == 0.6


def test_memorisation_ties() -> None:
    # On the boundary: 23 is 8 from 15, whose nearest other training point is 8 away.
    assert metrics.memorisation(TRAIN, col(23)) == 1.0
    # Equally near 1 (radius 1) and 10 (radius 9): 10 qualifies, so it counts.
    assert metrics.memorisation(col(0, 1, 10), col(5.5)) == 1.0
    # A copy of a duplicated training point counts although its radius is 0.
    assert metrics.memorisation(col(0, 0, 5), col(0, 2)) == 0.5


def test_distances_are_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of at most 120 distances must give the same answers as one block.
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(40, 3, generator=generator)
    fake = torch.randn(30, 3, generator=generator)
    train = torch.randn(20, 3, generator=generator)
    near_train = torch.cat([train[:5], fake[:10]])

    def all_metrics() -> tuple:
        return (metrics.precision_recall(real, fake), metrics.density_coverage(real, fake),
                metrics.memorisation(train, near_train))

    whole = all_metrics()
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 3 * 40)
    blocks = []
    original = metrics.torch.cdist

    def counting_cdist(a: Tensor, b: Tensor, **kwargs: object) -> Tensor:
        blocks.append(len(a) * len(b))
        return original(a, b, **kwargs)

    monkeypatch.setattr(metrics.torch, "cdist", counting_cdist)
    assert all_metrics() == whole
    assert max(blocks) <= 3 * 40
    assert len(blocks) > 10


# --- features --------------------------------------------------------------------------------


def test_features_batches_in_eval_mode_without_grad() -> None:
    extractor = Projection()
    extractor.train()
    images = gaussian_images(10, seed=0).requires_grad_()
    feats = metrics.features(extractor, images, batch_size=3)
    assert feats.shape == (10, 8)
    assert feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert not feats.requires_grad
    assert extractor.calls == 4
    assert extractor.modes == [False] * 4
    assert extractor.training  # mode restored
    torch.testing.assert_close(feats, images.detach().flatten(1) @ extractor.weight)


def test_features_rejects_non_image_input() -> None:
    with pytest.raises(ValueError, match=r"images must be a tensor \(N, C, H, W\)"):
        metrics.features(Projection(), torch.randn(10, 16))


# --- KID and FID -----------------------------------------------------------------------------


def test_kid_fid_same_vs_shifted_distribution(no_network: None) -> None:
    sample = gaussian_images(2000, seed=0)
    real, same = sample[:1000], sample[1000:]
    shifted = gaussian_images(1000, seed=1, shift=0.5)
    extractor = Projection()
    close = metrics.kid_fid(extractor, real, same, subsets=20)
    far = metrics.kid_fid(extractor, real, shifted, subsets=20)
    assert set(close) == {"kid", "kid_std", "fid"}
    assert all(type(value) is float for value in (*close.values(), *far.values()))
    assert abs(close["kid"]) < 1e-3
    assert close["fid"] < 0.05
    assert far["kid"] > 100 * max(abs(close["kid"]), 1e-4)
    assert far["fid"] > 100 * close["fid"]
    assert far["fid"] > 1.0


def test_kid_fid_reproducible_and_leaves_rng_alone() -> None:
    real, fake = gaussian_images(300, seed=0), gaussian_images(500, seed=1, shift=0.2)
    extractor = Projection()
    torch.manual_seed(99)
    state = torch.get_rng_state()
    first = metrics.kid_fid(extractor, real, fake, seed=3, subsets=10)
    assert torch.equal(torch.get_rng_state(), state)
    second = metrics.kid_fid(extractor, real, fake, seed=3, subsets=10)
    assert first == second
    other_seed = metrics.kid_fid(extractor, real, fake, seed=4, subsets=10)
    assert other_seed["kid"] != first["kid"]
    assert other_seed["fid"] == first["fid"]


def test_kid_fid_small_real_set_uses_extractor_offline(no_network: None) -> None:
    # 360 real images (the digits test split) against 1000 fakes: KID's default subset size of
    # 1000 would fail; the subset size must follow the smaller set.
    extractor = Projection()
    result = metrics.kid_fid(extractor, gaussian_images(360, seed=0), gaussian_images(1000, seed=1),
                             subsets=5)
    assert all(value == value for value in result.values())  # no NaN
    # KID and FID each run the extractor over every image.
    assert extractor.calls > 0
    assert extractor.images_seen == 2 * (360 + 1000)
    assert not any(extractor.modes)


def test_kid_fid_needs_two_samples_and_num_features() -> None:
    with pytest.raises(ValueError, match="at least 2 real samples"):
        metrics.kid_fid(Projection(), gaussian_images(1, seed=0), gaussian_images(5, seed=1))
    extractor = Projection()
    del extractor.num_features
    with pytest.raises(ValueError, match="num_features"):
        metrics.kid_fid(extractor, gaussian_images(5, seed=0), gaussian_images(5, seed=1))


# --- score -----------------------------------------------------------------------------------

SCORE_KEYS = {"kid", "kid_std", "fid", "precision", "recall", "density", "coverage",
              "memorisation"}


def test_score_without_train_images(no_network: None) -> None:
    real, fake = gaussian_images(200, seed=0), gaussian_images(300, seed=1)
    extractor = Projection()
    result = metrics.score(extractor, real, fake, seed=5, k=3, subsets=10)
    assert set(result) == SCORE_KEYS
    assert result["memorisation"] is None
    assert extractor.images_seen == 200 + 300  # each set extracted once
    assert SCORE_KEYS - {"kid_std"} <= set(HIGHER_IS_BETTER)  # every score has a direction
    # KID and FID match kid_fid on the same images and seed.
    direct = metrics.kid_fid(Projection(), real, fake, seed=5, subsets=10)
    for key in ("kid", "kid_std", "fid"):
        assert result[key] == pytest.approx(direct[key], rel=1e-6, abs=1e-9)
    real_feats, fake_feats = metrics.features(extractor, real), metrics.features(extractor, fake)
    assert (result["precision"], result["recall"]) == metrics.precision_recall(
        real_feats, fake_feats, k=3)
    assert (result["density"], result["coverage"]) == metrics.density_coverage(
        real_feats, fake_feats, k=3)


def test_score_with_train_images() -> None:
    train = gaussian_images(100, seed=2)
    real = gaussian_images(100, seed=0)
    extractor = Projection()
    copies = metrics.score(extractor, real, train[:50].clone(), train, k=3, subsets=5)
    assert copies["memorisation"] == 1.0
    assert extractor.images_seen == 100 + 50 + 100
    far = metrics.score(extractor, real, train[:50] + 100.0, train, k=3, subsets=5)
    assert far["memorisation"] == 0.0
    assert far["precision"] == 0.0 and far["coverage"] == 0.0
