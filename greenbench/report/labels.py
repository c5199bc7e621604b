"""Labels beside the points of a figure, never over each other, a marker or the Pareto line.

``label_points`` names each configuration beside its point when every label fits right next to
its point; else it numbers the points and keys the numbers to labels outside the axes.
``place_labels`` is the geometry behind it, in one unit (points), free of matplotlib. The text
helpers here draw data text literally (``$`` is no mathtext) and short, a user's class by its
name (``compact``).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

MAX_LABEL = 40  # characters of a configuration label drawn on a figure
CLASS_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")  # a word of a label: a user's class
MAX_DIRECT_LABELS = 8  # per panel of quality_vs_energy; beyond, the points are numbered
MAX_NUMBERED_POINTS = 40  # per figure of quality_vs_energy; beyond, only Pareto points are
LABEL_SIZE = 7.5  # points
MARKER_HALF = 4.0  # points either side of a marker (or of the Pareto line) kept free of labels
DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
RINGS = (0.0, 4.0, 9.0, 15.0, 22.0, 30.0, 40.0, 52.0)  # extra distance of a label, points


def label_points(fig: Figure, panels: list[tuple[Axes, pd.DataFrame]]) -> None:
    """Labels beside their points when every one fits right next to its point, clear of the
    others; else numbers beside the points and a key of numbers to labels outside the axes."""
    if all(len(rows) <= MAX_DIRECT_LABELS for _, rows in panels):
        texts = [[short(text(label)) for label in column_of(rows, "label")] for _, rows in panels]
        if _place(fig, panels, texts, rings=RINGS[:2]):
            return
    numbered = sum(len(rows) for _, rows in panels) <= MAX_NUMBERED_POINTS
    key: list[str] = []  # numbers run on across panels
    texts = []
    for _, rows in panels:
        named = np.ones(len(rows), bool) if numbered else flags_of(rows, "pareto")
        key += [f"{len(key) + i + 1}  {short(text(label))}"
                for i, label in enumerate(column_of(rows, "label")[named])]
        texts.append([str(n) if name else None for n, name in
                      zip(np.cumsum(named) + len(key) - named.sum(), named, strict=True)])
    if not key:
        return
    columns = math.ceil(len(key) / 26)
    longest = max(len(line) for line in key)
    fig.set_figwidth(fig.get_figwidth() + columns * (0.3 + longest * LABEL_SIZE * 0.55 / 72))
    fig.legend([Line2D([], [], linestyle="none")] * len(key), [plain(line) for line in key],
               loc="outside right upper", ncols=columns, fontsize=LABEL_SIZE, handlelength=0,
               handletextpad=0, title="key", title_fontsize=8)
    _place(fig, panels, texts)


def _place(fig: Figure, panels: list[tuple[Axes, pd.DataFrame]],
           texts: list[list[str | None]], rings: Sequence[float] = ()) -> bool:
    """Draw ``texts`` beside their points, where ``place_labels`` puts them. With ``rings``,
    draw nothing and return False when a label fits within none of them; without, any ring
    will do, and a label that fits nowhere goes just right of its point."""
    fig.draw_without_rendering()  # the final layout: the axes' sizes and transforms
    scale = 72 / fig.dpi  # pixels to points
    drawn = []
    for (ax, rows), panel_texts in zip(panels, texts, strict=True):
        xy = np.column_stack([rows["x"].to_numpy(float), rows["y"].to_numpy(float)])
        anchors = ax.transData.transform(xy) * scale
        shown = [i for i, text in enumerate(panel_texts) if text is not None]
        probes = [fig.text(0, 0, plain(panel_texts[i]), fontsize=LABEL_SIZE) for i in shown]
        sizes = [(box.width * scale + 2, box.height * scale + 2)  # with 1 pt of padding around
                 for box in (probe.get_window_extent() for probe in probes)]
        for probe in probes:
            probe.remove()
        # Points every ~3 pixels along the Pareto step line, for labels to keep off.
        front = rows[flags_of(rows, "pareto")].sort_values("x", kind="stable")
        fx, fy = front["x"].to_numpy(float), front["y"].to_numpy(float)
        corners = ax.transData.transform(np.column_stack([np.repeat(fx, 2)[1:],
                                                          np.repeat(fy, 2)[:-1]])) * scale
        line = [np.linspace(a, b, int(np.hypot(*(b - a)) // 2) + 2)
                for a, b in itertools.pairwise(corners)]
        x0, y0, x1, y1 = np.asarray(ax.bbox.extents) * scale
        spots = place_labels(anchors[shown], sizes, (x0 + 2, y0 + 2, x1 - 2, y1 - 2),
                             obstacles=np.vstack([anchors, *line]), rings=rings or RINGS)
        if rings and None in spots:
            return False
        drawn += [(ax, xy[i], anchors[i], panel_texts[i], size, spot)
                  for i, size, spot in zip(shown, sizes, spots, strict=True)]
    for ax, xy, anchor, text, (w, h), spot in drawn:
        spot = spot or (anchor[0] + MARKER_HALF + 1 + w / 2, anchor[1])
        dx, dy = spot[0] - anchor[0], spot[1] - anchor[1]
        note = ax.annotate(plain(text), xy, xytext=(dx, dy), textcoords="offset points",
                           ha="center", va="center", fontsize=LABEL_SIZE, color="0.15", zorder=5,
                           bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none",
                                 "alpha": 0.75},
                           arrowprops={"arrowstyle": "-", "color": "0.55", "linewidth": 0.6,
                                       "shrinkA": 0, "shrinkB": 2})
        note.set_in_layout(False)
        # A leader line only for a label set apart from its point.
        note.arrow_patch.set_visible(max(abs(dx) - w / 2, abs(dy) - h / 2) > MARKER_HALF + 3)
    return True


def place_labels(anchors: np.ndarray, sizes: Sequence[tuple[float, float]],
                 bounds: tuple[float, float, float, float], *,
                 obstacles: np.ndarray | None = None, rings: Sequence[float] = RINGS
                 ) -> list[tuple[float, float] | None]:
    """Centres for label boxes of ``sizes`` (w, h) beside ``anchors``, all in one unit: for each
    anchor in turn, the first candidate (``rings`` nearest first, then ``DIRECTIONS``) whose box
    is inside ``bounds`` (x0, y0, x1, y1) and clear of the boxes placed before and of the square
    of ``MARKER_HALF`` around every anchor and obstacle; None where none is."""
    anchors = np.asarray(anchors, float).reshape(-1, 2)
    points = np.vstack([anchors, np.reshape([] if obstacles is None else obstacles, (-1, 2))])
    points = points[np.isfinite(points).all(axis=1)]
    taken = np.column_stack([points - MARKER_HALF, points + MARKER_HALF])  # x0, y0, x1, y1
    spots: list[tuple[float, float] | None] = []
    for (x, y), (w, h) in zip(anchors, sizes, strict=True):
        spot = None
        candidates = ((x + dx * (MARKER_HALF + 1 + ring + w / 2),
                       y + dy * (MARKER_HALF + 1 + ring + h / 2))
                      for ring in rings for dx, dy in DIRECTIONS)
        for cx, cy in candidates if np.isfinite([x, y]).all() else ():
            box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            if (box[:2] < bounds[:2]).any() or (box[2:] > bounds[2:]).any():
                continue
            if not ((box[0] < taken[:, 2]) & (taken[:, 0] < box[2]) & (box[1] < taken[:, 3])
                    & (taken[:, 1] < box[3])).any():
                spot = (cx, cy)
                taken = np.vstack([taken, box])
                break
        spots.append(spot)
    return spots


def column_of(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column] if column in frame else pd.Series(None, index=frame.index, dtype=object)


def flags_of(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The column's flags: True for a true flag; False for false, None, NaN and no column."""
    return np.array([text(value) != "" and bool(value) for value in column_of(frame, column)],
                    dtype=bool)


def compact(labels: Sequence[str]) -> list[str]:
    """``labels`` with each class path in them (``mypkg.models.MyNet``) cut to its class name
    (``MyNet``), and a data module's (a class path after the first word) left out, as far as
    that leaves different labels different; labels without one (the reference models') stay as
    they are."""
    def cut(label: str, drop: bool) -> str:
        words = [(word.rsplit(".", 1)[1], i and drop) if CLASS_PATH.fullmatch(word)
                 else (word, False) for i, word in enumerate(label.split(" "))]
        return " ".join(word for word, dropped in words if not dropped)

    for drop in (True, False):
        shorter = [cut(label, drop) for label in labels]
        if len(set(shorter)) == len(set(labels)):
            return shorter
    return list(labels)


def text(value: Any) -> str:
    """A cell as text: '' for None and NaN."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    return str(value)


def short(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain(text: str) -> str:
    """Text that matplotlib draws literally: every ``$`` escaped, so no mathtext is parsed."""
    return text.replace("$", r"\$")
