"""What a point's quality is made of: the feature-space scores of a module that can sample,
the extractor they are computed with, and the record's ``quality`` section.

Any module with ``sample(n)`` (the reference GAN and VAE, or a user's) is scored against the
data's validation images in the feature space of an extractor trained on the data's own
training images (cached by a fingerprint of those images). When the images carry no labels, or
are not square ``(N, C, H, W)``, no extractor can be trained and the feature-space metrics are
withheld with the reason; so they are when the extractor's accuracy is below the floor.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

import torch

from greenbench.data import ImageData
from greenbench.point.curve import QualityCurve, best_point
from greenbench.quality.evaluate import EvalData, EvalSettings, evaluate
from greenbench.quality.extractor import ACCURACY_FLOOR, Extractor, load_or_build
from greenbench.records import HIGHER_IS_BETTER, last_line


@dataclass(frozen=True)
class ScoringData:
    """CPU float32 images of one point: the data module's training split (all of it, with
    labels when it has them), the subset the model trained on, and the validation split."""

    train_images: torch.Tensor | None
    train_labels: torch.Tensor | None
    seen_images: torch.Tensor | None
    val_images: torch.Tensor | None
    val_labels: torch.Tensor | None


class Scorer:
    """Scores a module with the point's settings and keeps the samples of the latest call.
    Its data and extractor come once the data module is set up (``prepare``)."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.eval_data = EvalData(None, None)
        self.settings = EvalSettings(
            num_samples=config["eval"]["num_samples"],
            importance_samples=config["eval"]["importance_samples"],
            seed=config["seed"],
        )
        self.pinned: Extractor | None = None  # the data's extractor, recorded
        self.extractor: Extractor | None = None  # the one scoring uses: none when withheld
        self.withheld: str | None = None  # why the feature-space metrics are withheld
        self.samples = torch.empty(0)
        self.images = True  # sample(n) gives images: until it is seen not to

    def prepare(self, data: ScoringData) -> None:
        """The images to score against, and the extractor (loaded, or trained once)."""
        self.eval_data = EvalData(data.val_images, data.seen_images)
        extractor, self.withheld = extractor_for(self.config, data)
        self.pinned, self.extractor = extractor, None if self.withheld else extractor

    def __call__(self, model: torch.nn.Module) -> dict[str, Any]:
        try:
            scores, self.samples, problem = evaluate(model, self.eval_data, self.extractor,
                                                     self.settings)
        except Exception as error:  # a scoring step that fails costs its scores, not the point
            traceback.print_exc()
            self.images, self.samples = False, torch.empty(0)
            self.withheld = self.withheld or f"scores withheld: scoring failed ({last_line(error)})"
            return {}
        if problem is not None:
            self.images = False
            self.withheld = f"image metrics withheld: {problem}"  # the first reason of all
        return scores

    @property
    def image_samples(self) -> torch.Tensor | None:
        """The latest samples when they are images, for the sample grid."""
        return self.samples if self.images else None


def extractor_for(config: dict[str, Any], data: ScoringData
                  ) -> tuple[Extractor | None, str | None]:
    """The pinned feature extractor for the point's data, and why its metrics are withheld
    (None when they are not)."""
    if data.val_images is None or data.train_images is None:
        return None, ("feature-space metrics withheld: no images to score samples against "
                      "(the data module needs a val_dataloader() whose batches are images, or "
                      "(images, labels))")
    if data.train_labels is None or data.val_labels is None:
        return None, ("feature-space metrics withheld: the data's images carry no integer "
                      "labels to train a feature extractor on")
    images = data.train_images
    if images.dim() != 4 or images.shape[-1] != images.shape[-2] or \
            data.val_images.shape[1:] != images.shape[1:]:
        return None, ("feature-space metrics withheld: the data's images are not square "
                      f"(N, C, H, W) images of one size (training images {tuple(images.shape)})")
    split = ImageData(images, data.train_labels, data.val_images, data.val_labels)
    extractor = load_or_build(config["dataset"], images.shape[-1], split)
    floor = config["eval"]["min_extractor_accuracy"]
    floor = floor if floor is not None else ACCURACY_FLOOR.get(config["dataset"])
    if floor is not None and extractor.accuracy < floor:
        return extractor, (
            f"feature-space metrics withheld: extractor {extractor.id} has test accuracy "
            f"{extractor.accuracy:.3f}, below the floor {floor}"
        )
    return extractor, None


def quality_record(final: dict[str, Any], curve: QualityCurve, extractor: Extractor | None,
                   withheld: str | None, quality: dict[str, Any]) -> dict[str, Any]:
    """The record's ``quality``: final and best scores, the extractor, what was withheld, the
    training joules to the target (measured at the point that first reached it), the target,
    whether and where it was reached (epoch, optimizer step, training batches), and which
    metric in which direction all this ranks by."""
    metric, mode, reached = quality["metric"], quality["mode"], curve.reached
    best = best_point(curve.points, metric, mode)
    return {
        "final": {"epoch": final["epoch"], **final["scores"]},
        "best": {"epoch": best["epoch"], **best["scores"]} if best else None,
        "extractor": extractor.record() if extractor is not None else None,
        "withheld": withheld,
        "energy_to_quality_j": reached["fit_j"] if reached else None,
        "target": quality["target"],
        # whether the metric reached the target, and where first (None: no target)
        "target_reached": None if quality["target"] is None else reached is not None,
        "target_reached_at": {key: reached[key] for key in ("epoch", "step", "batches")}
        if reached else None,
        "metric": metric,
        "mode": mode,
        # where the metric comes from: greenbench's scores of samples, or what the module
        # logged in validation (or, without validation, in training)
        "source": "samples" if metric in HIGHER_IS_BETTER else
                  "training" if curve.from_training else "validation",
    }


def missing_metric(curve: QualityCurve, metric: str) -> str | None:
    """Why a point has no quality: its metric is not one greenbench computes and the module
    never logged it; None when it has one (or greenbench withheld its own, with a reason)."""
    if metric in HIGHER_IS_BETTER or any(metric in p["scores"] for p in curve.points):
        return None
    where = "in training (it has no validation)" if curve.from_training else "in validation"
    if curve.non_finite is not None:
        return (f"quality.metric {metric!r} was logged {where} but never finite (last: "
                f"{curve.non_finite})")
    if metric in curve.step_only_names or f"{metric}_step" in curve.logged_names:
        return (f"quality.metric {metric!r} was logged {where} per step only; log it per "
                f"epoch too (self.log({metric!r}, ..., on_epoch=True)) for greenbench to read")
    logged = ", ".join(sorted(curve.logged_names)) or "nothing"
    return (f"quality.metric {metric!r} was never logged {where}; the module logged: "
            f"{logged}")
