"""Sampling energy: what using a trained generative model costs, per image (or per item of
whatever ``sample(n)`` returns: token ids of a language model are sampled and timed alike, and
``item_shape`` says what one item is).

After training (and outside every ``eval`` window), a generative point samples
``num_images`` images in batches of ``batch_size`` inside the energy callback's ``generate``
window, and does nothing else there: no scoring, no copying to the host beyond what ``sample``
itself does, the device synchronised at both edges. Sampling runs in the precision the point
trained in (the Trainer's precision plugin, so ``bf16-mixed`` samples under autocast), without
gradients. The record's ``generation`` section gives the images, the batch size, the window's
seconds, joules per image, images per second and milliseconds per batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from greenbench.energy.callback import EnergyCallback


def generate(model: LightningModule, trainer: Trainer, energy: EnergyCallback, num_images: int,
             batch_size: int) -> dict[str, Any]:
    """Sample ``num_images`` images in the ``generate`` window; what was done (no energy yet:
    that is known once the callback's result is, see ``summarise``)."""
    batches, item_shape = math.ceil(num_images / batch_size), None
    with torch.no_grad(), trainer.precision_plugin.forward_context(), energy.generate_window():
        for index in range(batches):
            drawn = model.sample(min(batch_size, num_images - index * batch_size))
            if item_shape is None and isinstance(drawn, torch.Tensor):
                item_shape = list(drawn.shape[1:])
    return {"images": num_images, "batch_size": batch_size, "batches": batches,
            "item_shape": item_shape}


def summarise(generation: dict[str, Any], window: dict[str, Any]) -> dict[str, Any]:
    """The record's ``generation`` section: what ``generate`` did, with the window's figures."""
    seconds, joules = window["duration_s"], window["total_j"]
    images, batches = generation["images"], generation["batches"]
    return {
        **generation,
        "seconds": seconds,
        "j_per_image": joules / images if joules is not None else None,
        "images_per_s": images / seconds if seconds > 0 else None,
        "ms_per_batch": 1000 * seconds / batches if batches else None,
        "reliable": window.get("reliable"),
    }
