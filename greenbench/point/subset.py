"""``data_fraction`` on any data module: the training loader rebuilt over a subset of its
dataset, and the images of a loader gathered for scoring.

The subset is class-stratified (``data.fraction_indices``) when the dataset's labels can be
read: a ``targets`` attribute, the second tensor of a ``TensorDataset``, or items that are
``(x, y)`` with an integer ``y``; otherwise it is a seeded random draw of the same size. The
rebuilt loader keeps the original's batch size, collate function, workers, pin_memory,
drop_last and shuffling (a random sampler stays random with the same generator, a sequential
one sequential); a custom sampler or batch sampler cannot be subset and is refused. Validation
and test loaders are never reduced.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
)

from greenbench.data import fraction_indices, subset_size

STRATIFIED, RANDOM, ALL = "stratified", "random", "all"
GATHER_BATCH = 256  # items per batch when images are gathered for scoring


class TrainingSubset:
    """``data_fraction`` on a data module as Lightning fits it: below 1, the module's own
    ``train_dataloader`` is wrapped on this instance, so that the loader Lightning asks for is
    the module's, rebuilt over the subset (every data-module hook still runs); at 1 the module
    is left untouched. ``summary`` says what was trained on, once a loader was made."""

    def __init__(self, datamodule: Any, fraction: float, seed: int):
        self.fraction, self.seed = fraction, seed
        self.summary: dict[str, Any] | None = None
        self._original = datamodule.train_dataloader
        if fraction < 1:
            datamodule.train_dataloader = self._reduced

    def _reduced(self) -> Any:
        """The module's training loader over the subset; a dict or list of loaders (Lightning
        combines them) has each of its loaders reduced alike."""
        original = self._original()
        if isinstance(original, DataLoader):
            loader, self.summary = training_subset(original, self.fraction, self.seed)
            return loader
        named = original.items() if isinstance(original, dict) else \
            enumerate(original) if isinstance(original, (list, tuple)) else None
        if named is None:
            raise ValueError(f"data_fraction below 1 needs train_dataloader() to return a "
                             f"DataLoader, or a dict or list of them; it returned a "
                             f"{type(original).__name__}")
        reduced = {key: training_subset(loader, self.fraction, self.seed)
                   for key, loader in named}
        self.summary = _combined([summary for _, summary in reduced.values()])
        loaders = {key: loader for key, (loader, _) in reduced.items()}
        return loaders if isinstance(original, dict) else type(original)(loaders.values())

    def loader(self, datamodule: Any) -> DataLoader:
        """The training loader, as Lightning gets it (for gathering images to score)."""
        loader = datamodule.train_dataloader()
        if self.summary is None:
            self.summary = training_subset(loader, 1.0, self.seed)[1]
        return loader

    def describe(self, trained_on: Any) -> dict[str, Any]:
        """What was trained on: the subset drawn, or, at fraction 1, ``trained_on`` (the loader,
        or the dict or list of loaders, Lightning trained with) as it is."""
        if self.summary is None:
            loaders = trained_on.values() if isinstance(trained_on, dict) else \
                trained_on if isinstance(trained_on, (list, tuple)) else [trained_on]
            if all(isinstance(loader, DataLoader) for loader in loaders):
                self.summary = _combined([training_subset(loader, 1.0, self.seed)[1]
                                          for loader in loaders])
        return self.summary or {"subset": ALL, "train_items": None, "train_split_items": None}


def _combined(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of several loaders' subsets: their kinds, and their items added up."""
    if len(summaries) == 1:
        return summaries[0]

    def total(key: str) -> int | None:
        counts = [summary[key] for summary in summaries]
        return None if None in counts else sum(counts)

    kinds = sorted({summary["subset"] for summary in summaries})
    return {"subset": "+".join(kinds), "train_items": total("train_items"),
            "train_split_items": total("train_split_items")}


def training_subset(loader: DataLoader, fraction: float, seed: int
                    ) -> tuple[DataLoader, dict[str, Any]]:
    """The loader to train on for ``fraction`` and what it holds: ``subset`` (stratified,
    random or all), ``train_items`` and ``train_split_items``."""
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset):
        if fraction < 1:
            raise ValueError("data_fraction below 1 needs a map-style training dataset; this "
                             "data module's is an IterableDataset")
        return loader, {"subset": ALL, "train_items": None, "train_split_items": None}
    count = len(dataset)
    if fraction >= 1:
        return loader, {"subset": ALL, "train_items": count, "train_split_items": count}
    shuffle, generator = _shuffling(loader)
    labels = read_labels(dataset)
    if labels is not None:
        keep, kind = fraction_indices(labels, fraction, seed), STRATIFIED
    else:
        drawn = np.random.default_rng(seed).permutation(count)[:subset_size(count, fraction)]
        keep, kind = np.sort(drawn), RANDOM
    if len(keep) == 0:
        raise ValueError(f"data_fraction {fraction:g} leaves none of the {count} training "
                         "items; raise data_fraction")
    if loader.drop_last and len(keep) < loader.batch_size:
        raise ValueError(f"data_fraction {fraction:g} leaves {len(keep)} of {count} training "
                         f"items, fewer than the batch size {loader.batch_size}")
    subset = DataLoader(
        Subset(dataset, keep.tolist()), batch_size=loader.batch_size, shuffle=shuffle,
        drop_last=loader.drop_last, collate_fn=loader.collate_fn,
        num_workers=loader.num_workers, pin_memory=loader.pin_memory, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn, generator=generator,
        multiprocessing_context=loader.multiprocessing_context,
        persistent_workers=loader.persistent_workers,
        prefetch_factor=loader.prefetch_factor if loader.num_workers else None,
    )
    return subset, {"subset": kind, "train_items": len(keep), "train_split_items": count}


def _shuffling(loader: DataLoader) -> tuple[bool, torch.Generator | None]:
    sampler = loader.sampler
    if type(loader.batch_sampler) is not BatchSampler or \
            type(sampler) not in (RandomSampler, SequentialSampler):
        used = type(loader.batch_sampler if type(loader.batch_sampler) is not BatchSampler
                    else sampler).__name__
        raise ValueError(f"data_fraction below 1 needs a training loader with a plain random "
                         f"or sequential sampler; this one uses {used}")
    if isinstance(sampler, RandomSampler):
        if sampler.replacement or sampler._num_samples is not None:
            raise ValueError("data_fraction below 1 cannot subset a RandomSampler that draws "
                             "with replacement or a fixed number of samples")
        return True, sampler.generator
    return False, None


def read_labels(dataset: Any) -> np.ndarray | None:
    """The integer class label of every item of ``dataset``, or None when they cannot be read."""
    if isinstance(dataset, Subset):
        inner = read_labels(dataset.dataset)
        return None if inner is None else inner[np.asarray(dataset.indices, dtype=np.int64)]
    count = len(dataset)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return _integer_labels(dataset.tensors[1], count)
    if hasattr(dataset, "targets"):
        return _integer_labels(dataset.targets, count)
    labels = []
    for index in range(count):
        item = dataset[index]
        label = item[1] if isinstance(item, (tuple, list)) and len(item) >= 2 else None
        label = _integer(label)
        if label is None:
            return None
        labels.append(label)
    return np.asarray(labels, dtype=np.int64)


def gather_images(loader: DataLoader) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Every image of ``loader`` (its batches' first element, or the batch itself when it is a
    tensor) on the CPU in float32, and their integer labels when each batch carries them."""
    images, labels, labelled = [], [], True
    for batch in loader:
        x, y = (batch[0], batch[1] if len(batch) >= 2 else None) \
            if isinstance(batch, (tuple, list)) else (batch, None)
        if not isinstance(x, torch.Tensor):
            return None, None
        images.append(x.detach().to("cpu", torch.float32))
        if isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point() \
                and y.dtype != torch.bool:
            labels.append(y.detach().to("cpu", torch.int64))
        else:
            labelled = False
    if not images:
        return None, None
    return torch.cat(images), torch.cat(labels) if labelled and labels else None


def plain_loader(dataset: Any, like: DataLoader) -> DataLoader:
    """A loader over ``dataset`` in order, in ``like``'s collate function, for gathering."""
    return DataLoader(dataset, batch_size=GATHER_BATCH, shuffle=False,
                      collate_fn=like.collate_fn)


def _integer_labels(values: Any, count: int) -> np.ndarray | None:
    array = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
        return None
    return array.astype(np.int64)


def _integer(value: Any) -> int | None:
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.is_floating_point() or value.dtype == torch.bool:
            return None
        return int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return None
