"""Sample quality on digits, end to end: orderings any correct metric must satisfy, quality
that improves with training, reproducible scores, and scoring inside the eval window."""

from __future__ import annotations

import itertools
import socket

import pytest
import torch

from greenbench.data import load_dataset
from greenbench.models import build_model
from greenbench.point.run import run_point
from greenbench.quality import metrics
from greenbench.quality.extractor import load_or_build
from greenbench.records import RunSpec
from tests.helpers import tiny_spec

# One worker runs this module: its tests share the points they train (``curves``).
pytestmark = pytest.mark.xdist_group("quality")

SIZE = 16
EPOCHS = 3  # of a 16-pixel GAN or VAE on half of digits: long enough for quality to improve


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, SIZE)


@pytest.fixture(scope="module")
def extractor(digits):
    return load_or_build("digits", SIZE, digits)


def test_orderings_any_correct_metric_satisfies(digits, extractor) -> None:
    test, train = digits.test_images, digits.train_images
    noise = torch.rand(1000, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    untrained = build_model("gan", image_size=SIZE, channels=1, width=0.5, latent_dim=32,
                            lr=2e-4).sample(1000, generator=torch.Generator().manual_seed(0))

    real = metrics.score(extractor.module, test, train, train_images=train)
    random = metrics.score(extractor.module, test, noise, train_images=train)
    blank = metrics.score(extractor.module, test, untrained, train_images=train)

    for bad in (random, blank):
        assert real["kid"] < bad["kid"] / 10
        assert real["fid"] < bad["fid"] / 10
    assert real["precision"] > 0.8 and real["recall"] > 0.8
    assert random["precision"] < 0.05
    assert real["memorisation"] > 0.99  # the train split, scored against itself
    assert random["memorisation"] < 0.05
    assert extractor.accuracy >= 0.95


def test_scores_are_reproducible_and_offline(digits, extractor, monkeypatch) -> None:
    def refuse(self, address, *args):
        raise OSError("no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    noise = torch.rand(300, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    first = metrics.score(extractor.module, digits.test_images, noise, digits.train_images)
    second = metrics.score(extractor.module, digits.test_images, noise, digits.train_images)
    assert first == second


def along_the_curve(model: str, every_n_epochs: int | None = 1) -> RunSpec:
    return tiny_spec(model=model, image_size=SIZE, width=0.5, latent_dim=32, batch_size=32,
                     steps=None, epochs=EPOCHS, data_fraction=0.5,
                     lr=2e-4 if model == "gan" else 1e-3,
                     eval={"num_samples": 200, "every_n_epochs": every_n_epochs,
                           "target_kid": 1.0, "min_extractor_accuracy": None,
                           "importance_samples": 2})


class Curves(dict):
    """A record of each reference model scored after every epoch, trained when first asked
    for (a test on another worker trains only the model it needs)."""

    def __missing__(self, model: str) -> dict:
        self[model] = run_point(along_the_curve(model)).record
        return self[model]


@pytest.fixture(scope="module")
def curves() -> Curves:
    return Curves()


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_quality_improves_with_training_along_the_curve(model: str, curves: dict) -> None:
    record = curves[model]

    assert record["status"] == "ok", record["reason"]
    curve = record["quality_curve"]
    assert [p["epoch"] for p in curve] == list(range(1, EPOCHS + 1))
    first, last = curve[0], curve[-1]
    assert last["kid"] < first["kid"]
    if model == "vae":
        assert last["nll_nats"] < first["nll_nats"]
    assert all(b["fit_j"] > a["fit_j"] for a, b in itertools.pairwise(curve))
    quality = record["quality"]
    assert quality["final"]["epoch"] == EPOCHS and quality["final"]["kid"] == last["kid"]
    best = min(curve, key=lambda p: p["kid"])
    assert quality["best"]["epoch"] == best["epoch"] and quality["best"]["kid"] == best["kid"]
    reached = next((p for p in curve if p["kid"] <= 1.0), None)
    assert quality["energy_to_quality_j"] == (reached["fit_j"] if reached else None)
    windows = record["energy"]["windows"]
    # Each point's training energy is all of it up to that point, the epoch in progress too:
    # the last point is the end of training, the first past warm-up (two of its batches). No
    # ratio to warm-up: on a CPU shared with other tests a load estimate makes the two warm-up
    # batches cost as much as the rest of an epoch.
    assert curve[-1]["fit_j"] == pytest.approx(windows["fit"]["total_j"], rel=0.02)
    assert curve[0]["fit_j"] > windows["warmup"]["total_j"]
    # The evaluations ran inside the eval window, none in train.
    assert windows["eval"]["duration_s"] > 0
    assert windows["train"]["samples"] + windows["warmup"]["samples"] == record["train"][
        "samples_seen"]


@pytest.fixture(scope="module")
def qualities() -> dict[str, dict]:
    """The quality of one tiny 16-pixel point of each reference model."""
    return {model: run_point(tiny_spec(model=model, image_size=SIZE)).record["quality"]
            for model in ("gan", "vae")}


def test_rerunning_a_point_gives_the_same_scores(qualities: dict[str, dict]) -> None:
    first = qualities["vae"]
    second = run_point(tiny_spec(model="vae", image_size=SIZE)).record["quality"]
    assert first["extractor"] == second["extractor"]
    for key, value in first["final"].items():
        assert second["final"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_record_quality_shape_for_both_models(qualities: dict[str, dict]) -> None:
    for model, quality in qualities.items():
        feature_keys = {"kid", "kid_std", "fid", "precision", "recall", "density", "coverage",
                        "memorisation"}
        likelihood_keys = {"elbo_nats", "nll_nats", "nll_bits_per_dim", "recon_mse"}
        expected = feature_keys | ({"epoch"} | (likelihood_keys if model == "vae" else set()))
        assert set(quality["final"]) == expected
        assert quality["extractor"]["accuracy"] >= 0.95 and quality["withheld"] is None
        assert len(quality["extractor"]["sha256"]) == 64


def test_low_extractor_accuracy_withholds_feature_metrics_but_not_the_run() -> None:
    spec = tiny_spec(model="vae", image_size=SIZE,
                     eval={"num_samples": 50, "every_n_epochs": None, "target_kid": None,
                           "min_extractor_accuracy": 1.0, "importance_samples": 4})
    record = run_point(spec).record
    assert record["status"] == "ok"
    quality = record["quality"]
    assert quality["withheld"].startswith("feature-space metrics withheld")
    assert "kid" not in quality["final"] and "nll_nats" in quality["final"]
    assert quality["extractor"]["id"].startswith("digits-16px-")


def test_scoring_during_training_does_not_change_the_training(curves: dict) -> None:
    # The curve's evaluations draw samples with their own seeded RNG inside fork_rng: the
    # training they interrupt must come out bit for bit the same as without them.
    with_curve = curves["gan"]
    without = run_point(along_the_curve("gan", every_n_epochs=None)).record
    assert len(with_curve["quality_curve"]) == EPOCHS and len(without["quality_curve"]) == 1
    assert with_curve["train"]["final_losses"] == without["train"]["final_losses"]
    assert with_curve["quality"]["final"] == without["quality"]["final"]
