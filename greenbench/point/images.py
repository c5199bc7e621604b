"""Sample grids: a batch of generated images as one PNG, for a look by eye."""

from __future__ import annotations

import io
import math

import numpy as np
import torch


def grid_png(images: torch.Tensor, columns: int | None = None, pad: int = 1) -> bytes:
    """Tile images ``(n, C, H, W)`` with values in [-1, 1] into one PNG."""
    from matplotlib.image import imsave

    n, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    canvas = np.ones((rows * (height + pad) + pad, columns * (width + pad) + pad, channels))
    for i, image in enumerate(pixels):
        top = pad + (i // columns) * (height + pad)
        left = pad + (i % columns) * (width + pad)
        canvas[top:top + height, left:left + width] = image.transpose(1, 2, 0)
    buffer = io.BytesIO()
    if channels == 1:
        imsave(buffer, canvas[..., 0], cmap="gray", vmin=0.0, vmax=1.0, format="png")
    else:
        imsave(buffer, canvas, format="png")
    return buffer.getvalue()
