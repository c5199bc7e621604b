"""Getting a generative point's scoring ready inside fit, once Lightning has set its data up.

``ScoringPreparation`` is the first callback of a point's Trainer. Its ``setup`` hook runs when
Lightning has called the data module's ``prepare_data`` and ``setup``, and before ``on_fit_start``
(where the energy callback starts the meters): it gathers the images a module with
``sample(n)`` is scored against (the training split, the part of it the model trains on, the
validation split) and loads or trains the feature extractor, outside every measured window and
without touching the random stream training draws from. Its time is ``timings.extractor_s``.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader

from greenbench.point.scoring import Scorer, ScoringData
from greenbench.point.subset import ALL, TrainingSubset, gather_images, plain_loader


class ScoringPreparation(Callback):
    def __init__(self, scorer: Scorer | None, subset: TrainingSubset, has_val_data: bool,
                 timings: dict[str, Any]):
        self.scorer, self.subset = scorer, subset
        self.has_val_data, self.timings = has_val_data, timings

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or self.scorer is None or self.scorer.eval_data.test_images is not None:
            return
        started = time.perf_counter()
        # Iterating a DataLoader draws a seed from the global random stream, and training an
        # extractor draws many: training must find the stream as seed_everything left it.
        with torch.random.fork_rng(devices=[]):
            datamodule = trainer.datamodule
            self.scorer.prepare(scoring_data(
                datamodule if self.has_val_data else None, self.subset.loader(datamodule),
                self.subset.summary["subset"] != ALL))
        self.timings["extractor_s"] = round(time.perf_counter() - started, 3)


def scoring_data(datamodule: Any, loader: DataLoader, subset: bool) -> ScoringData:
    """The images a generative point is scored on: the whole training split (and its labels,
    for the extractor), the part of it the model trains on, and the validation split (none
    when the data module has no ``val_dataloader``)."""
    split = loader.dataset.dataset if subset else loader.dataset
    train_images, train_labels = gather_images(plain_loader(split, loader))
    seen_images = gather_images(plain_loader(loader.dataset, loader))[0] if subset \
        else train_images
    val_images, val_labels = gather_images(datamodule.val_dataloader()) \
        if datamodule is not None else (None, None)
    return ScoringData(train_images, train_labels, seen_images, val_images, val_labels)
