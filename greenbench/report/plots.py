"""The report's figures, drawn with matplotlib's object-oriented API (no pyplot, no global state).

Each function writes ``<name>.png`` (150 dpi) and ``<name>.svg`` (text as text) into ``out_dir``,
rendered in memory then written atomically (never an empty file), and returns the PNG's path, or
``None`` when there is nothing to plot. Figures name their units and say when joules are
estimated; a value not finite or beyond ``MAX_VALUE`` is left out and counted on the figure.
Data text is drawn literally (``$`` is no mathtext); point labels never overprint each other.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from greenbench.energy.meters import COMPONENTS
from greenbench.energy.monitor import RUN_PHASES
from greenbench.files import atomic_write

DPI = 150
ESTIMATED_NOTE = "energy: CodeCarbon estimates, not measured"
LOG_SPAN = 10.0  # an axis whose values span more than this factor is drawn on a log scale
MAX_LABEL = 40  # characters of a configuration label drawn on a figure
MAX_VALUE = 1e15  # |value| beyond this (J or KID) is no measurement: left out, and counted
MAX_DIRECT_LABELS = 8  # per panel of kid_vs_energy; beyond, the points are numbered
MAX_NUMBERED_POINTS = 40  # per figure of kid_vs_energy; beyond, only Pareto points are
ORDER_KEYS = ("model", "dataset", "precision", "width", "data_fraction")  # bars and numbers

WINDOWS = RUN_PHASES  # the windows of the energy breakdown; idle is a baseline, not a cost
COMPONENT_COLOURS = {"gpu": "#2ca02c", "cpu": "#1f77b4", "ram": "#ff7f0e"}
WINDOW_HATCHES = {"warmup": "////", "train": "", "eval": "....", "generate": "xx"}
POINT_COLOUR, PARETO_COLOUR, NOTE_COLOUR = "#1f77b4", "#d62728", "#a04000"
LABEL_SIZE = 7.5  # points
MARKER_HALF = 4.0  # points either side of a marker (or of the Pareto line) kept free of labels
DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
RINGS = (0.0, 4.0, 9.0, 15.0, 22.0, 30.0, 40.0, 52.0)  # extra distance of a label, points


def kid_vs_energy(summary: pd.DataFrame, out_dir: Path) -> Path | None:
    """KID against training energy, one panel per (model, dataset), the Pareto front as a step line.

    ``summary`` has one row per configuration: ``model``, ``dataset``, ``label``,
    ``energy_fit_j_mean`` and ``_ci`` (training energy: warm-up plus train; else the axis says
    it is ``energy_train_j_*``, the train window), ``kid_mean``, ``kid_ci``, ``pareto``,
    ``measured``, and the config columns that number the points (``config_order``).
    """
    fit = _cleaned(summary, {"energy_fit_j_mean": "fit"})[0]["fit"].notna().any()
    energy = "energy_fit_j" if fit else "energy_train_j"
    needed = ("model", "dataset", f"{energy}_mean", "kid_mean")
    if summary.empty or any(column not in summary for column in needed):
        return None
    rows, left_out = _cleaned(summary, {f"{energy}_mean": "x", f"{energy}_ci": "x_ci",
                                        "kid_mean": "y", "kid_ci": "y_ci"})
    rows = config_order(rows.dropna(subset=["x", "y"]))
    if rows.empty:
        return None

    panels = list(rows.groupby(["model", "dataset"], sort=False, dropna=False))
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.4 * ncols, 4.4 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    xlabel = "training energy (J)" if fit else "training energy (J), train window only"
    for ax, ((model, dataset), panel) in zip(axes, panels, strict=False):
        _kid_panel(ax, panel, xlabel)
        ax.set_title(_plain(f"{_text(model)} on {_text(dataset)}"))
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    fig.suptitle(kid_title(int((rows["x_ci"].notna() | rows["y_ci"].notna()).sum()), len(rows)))
    legend = [Line2D([], [], linestyle="none", marker="o", markersize=5, color=POINT_COLOUR,
                     label="configuration"),
              Line2D([], [], color=PARETO_COLOUR, marker="D", markersize=5, label="Pareto front")]
    _notes(fig, estimated=not _flags(rows, "measured").all(), left_out=left_out, legend=legend)
    _label_points(fig, [(ax, panel) for ax, (_, panel) in zip(axes, panels, strict=False)])
    return _save(fig, out_dir, "kid_vs_energy")


def kid_title(with_bars: int, points: int) -> str:
    """The title of ``kid_vs_energy``: it names error bars only when some point has them."""
    bars = "" if not with_bars else "; error bars: 95 % CI" + (
        "" if with_bars == points else ", where a configuration has several runs")
    return f"KID against training energy (lower left is better{bars})"


def _kid_panel(ax: Axes, rows: pd.DataFrame, xlabel: str) -> None:
    """One (model, dataset) panel of ``kid_vs_energy``: points, bars and front, no labels."""
    energy, kid = rows["x"].to_numpy(float), rows["y"].to_numpy(float)
    energy_ci, kid_ci = rows["x_ci"].to_numpy(float), rows["y_ci"].to_numpy(float)
    log = _log_scale(energy)
    if log:
        _log_x(ax)
    if np.isfinite(energy_ci).any() or np.isfinite(kid_ci).any():  # a NaN draws no bar
        # On a log axis an interval reaching zero or below is cut just above zero.
        lower = np.minimum(energy_ci, 0.99 * energy) if log else energy_ci
        ax.errorbar(energy, kid, xerr=[lower, energy_ci], yerr=kid_ci, fmt="none", ecolor="0.65",
                    elinewidth=1, capsize=2, zorder=1)
    pareto = _flags(rows, "pareto")
    if (~pareto).any():
        ax.scatter(energy[~pareto], kid[~pareto], s=28, color=POINT_COLOUR, zorder=3)
    if pareto.any():
        order = np.argsort(energy[pareto], kind="stable")
        ax.step(energy[pareto][order], kid[pareto][order], where="post", color=PARETO_COLOUR,
                linewidth=1.5, marker="D", markersize=5, zorder=4)
    ax.margins(0.1)
    ax.set_xlabel(xlabel + (", log scale" if log else ""))
    ax.set_ylabel("KID, mean (lower is better)")
    ax.grid(True, which="major", alpha=0.3)


def _label_points(fig: Figure, panels: list[tuple[Axes, pd.DataFrame]]) -> None:
    """Labels beside their points when every one fits right next to its point, clear of the
    others; else numbers beside the points and a key of numbers to labels outside the axes."""
    if all(len(rows) <= MAX_DIRECT_LABELS for _, rows in panels):
        texts = [[_short(_text(label)) for label in _column(rows, "label")] for _, rows in panels]
        if _place(fig, panels, texts, rings=RINGS[:2]):
            return
    numbered = sum(len(rows) for _, rows in panels) <= MAX_NUMBERED_POINTS
    key: list[str] = []  # numbers run on across panels
    texts = []
    for _, rows in panels:
        named = np.ones(len(rows), bool) if numbered else _flags(rows, "pareto")
        key += [f"{len(key) + i + 1}  {_short(_text(label))}"
                for i, label in enumerate(_column(rows, "label")[named])]
        texts.append([str(n) if name else None for n, name in
                      zip(np.cumsum(named) + len(key) - named.sum(), named, strict=True)])
    if not key:
        return
    columns = math.ceil(len(key) / 26)
    longest = max(len(line) for line in key)
    fig.set_figwidth(fig.get_figwidth() + columns * (0.3 + longest * LABEL_SIZE * 0.55 / 72))
    fig.legend([Line2D([], [], linestyle="none")] * len(key), [_plain(line) for line in key],
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
        probes = [fig.text(0, 0, _plain(panel_texts[i]), fontsize=LABEL_SIZE) for i in shown]
        sizes = [(box.width * scale + 2, box.height * scale + 2)  # with 1 pt of padding around
                 for box in (probe.get_window_extent() for probe in probes)]
        for probe in probes:
            probe.remove()
        # Points every ~3 pixels along the Pareto step line, for labels to keep off.
        front = rows[_flags(rows, "pareto")].sort_values("x", kind="stable")
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
        note = ax.annotate(_plain(text), xy, xytext=(dx, dy), textcoords="offset points",
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


def energy_breakdown(results: pd.DataFrame, out_dir: Path) -> Path | None:
    """Stacked bars per configuration ``label``, in ``config_order``: mean joules per window
    and component of ``results``, the ok runs (``label``, config and
    ``energy_<window>_<component>_j`` columns). A component without a value (no meter) is left
    out of the bar, never drawn as 0 J; the mean is over the runs that have a value."""
    columns = [f"energy_{window}_{component}_j" for window in WINDOWS for component in COMPONENTS]
    columns = [column for column in columns if column in results]
    if results.empty or "label" not in results or not columns:
        return None
    energy, left_out = _cleaned(config_order(results), {column: column for column in columns})
    energy["label"] = [_text(label) for label in energy["label"]]
    energy["model"] = [_text(model) for model in _column(energy, "model")]
    means = energy.groupby("label", sort=False)[columns].mean().dropna(how="all")
    if means.empty:
        return None
    models = energy.groupby("label", sort=False)["model"].first()[means.index].to_numpy()

    fig = Figure(figsize=(9.5, max(3.2, 0.45 * len(means) + 2.0)), layout="constrained")
    ax = fig.add_subplot()
    positions = np.arange(len(means))
    stacked = np.zeros(len(means))
    drawn: set[str] = set()  # the windows and components with at least one bar
    for window in WINDOWS:
        for component in COMPONENTS:
            column = f"energy_{window}_{component}_j"
            values = means[column].to_numpy(float) if column in means else np.array([])
            bar = np.isfinite(values)
            if bar.any():
                ax.barh(positions[bar], values[bar], left=stacked[bar], height=0.62,
                        color=COMPONENT_COLOURS[component], hatch=WINDOW_HATCHES[window],
                        edgecolor="white", linewidth=0.8)
                stacked[bar] += values[bar]
                drawn |= {window, component}

    for position, total in zip(positions, stacked, strict=True):
        text = f"{total:,.0f} J" if total >= 10 else f"{total:.2g} J"
        ax.text(total, position, f" {text}", va="center", fontsize=8, color="0.25")
    for boundary in np.flatnonzero(models[1:] != models[:-1]):
        ax.axhline(boundary + 0.5, color="0.6", linewidth=0.8)  # between models
    ax.set_yticks(positions, labels=[_plain(_short(label)) for label in means.index])
    ax.set_ylim(len(means) - 0.4, -0.6)  # top to bottom, half a bar's gap at either end
    ax.margins(x=0.14)
    ax.set_xlim(left=0)
    ax.set_xlabel("energy (J)")
    ax.grid(True, axis="x", alpha=0.3)
    if means.isna().to_numpy().any():
        ax.set_title("components without a value had no meter: left out, not counted as 0 J",
                     fontsize=8.5, color="0.35")

    handles = [Patch(facecolor=COMPONENT_COLOURS[c], label=c.upper())
               for c in COMPONENTS if c in drawn]
    handles += [Patch(facecolor="0.55", edgecolor="white", hatch=WINDOW_HATCHES[w],
                      label=f"{w} window") for w in WINDOWS if w in drawn]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8.5)
    fig.suptitle("Energy per configuration by window and component (mean over ok runs)")
    estimated = "energy_measured" in results and not _flags(results, "energy_measured").all()
    _notes(fig, estimated=estimated, left_out=left_out)
    return _save(fig, out_dir, "energy_breakdown")


def config_order(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted by model, dataset, precision (most bits first), width and data
    fraction (smallest first), those of them present; missing values last; ties keep order."""
    keys = [key for key in ORDER_KEYS if key in frame]
    return frame.sort_values(keys, key=_sort_key, kind="stable") if keys else frame


def _sort_key(column: pd.Series) -> pd.Series:
    if column.name in ("width", "data_fraction"):
        return pd.to_numeric(column, errors="coerce").fillna(math.inf)
    texts = column.map(_text)
    bits = {text: int(found.group()) if column.name == "precision" and (  # 16 for bf16-mixed
        found := re.search(r"\d+", text)) else 0 for text in set(texts)}
    ranked = sorted(bits, key=lambda text: (text == "", -bits[text], text))
    return texts.map({text: rank for rank, text in enumerate(ranked)})


def kid_curves(curves: pd.DataFrame, labels: dict[str, str], out_dir: Path, *,
               estimated: bool = False) -> Path | None:
    """KID against the training energy spent so far, one panel per model on its own KID scale.

    ``curves``: ``run_id``, ``epoch``, ``step``, ``train_j``, ``kid``...; ``labels``: run id to
    configuration label (else the id). The model is the ``model`` column, else the label's first
    word. A line is the mean of a configuration's runs at each scored epoch (quick for thousands
    of runs); one scored point is a marker. ``estimated`` adds the estimated-energy note.
    """
    if curves.empty or any(column not in curves for column in ("run_id", "train_j", "kid")):
        return None
    points, left_out = _cleaned(curves, {"train_j": "train_j", "kid": "kid"})
    points = points.dropna(subset=["train_j", "kid"])
    if points.empty:
        return None
    points["label"] = [_text(labels.get(run_id, run_id)) for run_id in points["run_id"]]
    points["panel"] = ([_text(model) for model in points["model"]] if "model" in points
                       else [label.split(" ", 1)[0] for label in points["label"]])
    order = "epoch" if "epoch" in points else "step"
    means = (points.groupby(["panel", "label", order], sort=False)[["train_j", "kid"]].mean()
             .reset_index())
    models = sorted(set(means["panel"]))
    order_of = {label: i for i, label in enumerate(dict.fromkeys(labels.values()))}  # tables'

    fig = Figure(figsize=(9.5, 3.5 * len(models) + 1.0), layout="constrained")
    for ax, model in zip(fig.subplots(len(models), 1, squeeze=False).ravel(), models,
                         strict=True):
        panel = means[means["panel"] == model]
        names = sorted(set(panel["label"]), key=lambda name: (order_of.get(name, math.inf), name))
        cmap = mpl.colormaps["tab10" if len(names) <= 10 else "tab20"]  # repeated past 20
        colours, handles = {name: cmap(i % cmap.N) for i, name in enumerate(names)}, []
        for label in names:
            line = panel[panel["label"] == label].sort_values(order, kind="stable")
            single = len(line) == 1
            handles += ax.plot(line["train_j"].to_numpy(float), line["kid"].to_numpy(float),
                               color=colours[label], marker="o", markersize=6 if single else 3.5,
                               linestyle="none" if single else "-", linewidth=1.3, alpha=0.9)
        log_x, log_y = _log_scale(panel["train_j"].to_numpy()), _log_scale(panel["kid"].to_numpy())
        if log_x:
            _log_x(ax)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("cumulative training energy (J" + (", log scale)" if log_x else ")"))
        ax.set_ylabel("KID (lower is better" + ("; log scale)" if log_y else ")"))
        ax.set_title(_plain(model), fontsize=10)
        ax.grid(True, alpha=0.3)
        # Explicit labels: a label starting with "_" would otherwise be dropped from the legend.
        ax.legend(handles, [_plain(_short(label)) for label in names], loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), fontsize=7.5, title="configuration",
                  title_fontsize=8, ncols=math.ceil(len(names) / 14))
    fig.suptitle("KID during training against the training energy spent so far "
                 "(each model on its own KID scale)")
    _notes(fig, estimated=estimated, left_out=left_out)
    return _save(fig, out_dir, "kid_curves")


def _notes(fig: Figure, *, estimated: bool, left_out: int, legend: list[Line2D] | None = None
           ) -> None:
    """Rows in a strip at the bottom, outside the layout, so never over a label: a one-row
    ``legend``, the count of values left out, the estimated-energy note. Call before layout."""
    rows: list[tuple[str, dict[str, Any]]] = [("", {})] if legend else []
    if left_out:
        limit = f"{MAX_VALUE:.0e}".replace("+", "")
        rows.append((f"{left_out} value(s) left out: not finite or beyond {limit}",
                     {"fontsize": 8.5, "color": "0.3"}))
    if estimated:
        rows.append((ESTIMATED_NOTE, {"fontsize": 9.5, "style": "italic", "color": NOTE_COLOUR}))
    if not rows:
        return
    strip = (0.1 + 0.22 * len(rows)) / fig.get_figheight()
    fig.get_layout_engine().set(rect=(0, strip, 1, 1 - strip))
    for i, (text, style) in enumerate(rows):
        y = strip * (len(rows) - i - 0.4) / (len(rows) + 0.2)
        if legend and not i:
            fig.legend(handles=legend, loc="center", bbox_to_anchor=(0.5, y), ncols=len(legend),
                       fontsize=8, frameon=False, borderpad=0).set_in_layout(False)
        else:
            fig.text(0.5, y, text, ha="center", va="center", **style)


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    """Render ``name``.png and ``name``.svg in memory, then write each atomically."""
    png, svg = BytesIO(), BytesIO()
    fig.savefig(png, format="png", dpi=DPI, facecolor="white")
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(svg, format="svg", facecolor="white", metadata={"Date": None})
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for suffix, content in ((".png", png), (".svg", svg)):
        atomic_write(Path(out_dir) / f"{name}{suffix}", content.getvalue())
    return Path(out_dir) / f"{name}.png"


def _cleaned(frame: pd.DataFrame, columns: dict[str, str]) -> tuple[pd.DataFrame, int]:
    """A copy of ``frame`` with ``columns`` (source: name) as plottable floats, and how many
    values were left out: not finite, beyond ``MAX_VALUE``, or negative for an interval (a name
    ending ``_ci``). A missing value (or column) is NaN, and not counted as left out."""
    out, left_out = frame.copy(), 0
    for column, name in columns.items():
        raw = pd.to_numeric(frame.get(column, pd.Series(np.nan, index=frame.index)),
                            errors="coerce").astype(float)
        bad = raw.notna() & ~(np.isfinite(raw) & (raw.abs() <= MAX_VALUE)
                              & ~(name.endswith("_ci") & (raw < 0)))
        out[name], left_out = raw.mask(bad), left_out + int(bad.sum())
    return out, left_out


def _column(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column] if column in frame else pd.Series(None, index=frame.index, dtype=object)


def _flags(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The column's flags: True for a true flag; False for false, None, NaN and no column."""
    return np.array([_text(value) != "" and bool(value) for value in _column(frame, column)],
                    dtype=bool)


def _log_scale(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return bool(finite.size) and finite.min() > 0 and finite.max() / finite.min() > LOG_SPAN


def _log_x(ax: Axes) -> None:
    """A log x axis whose ticks read as plain numbers (300, not 3 x 10^2)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False,
                                                     minor_thresholds=(2, 0.5)))


def _text(value: Any) -> str:
    """A cell as text: '' for None and NaN."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    return str(value)


def _short(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str) -> str:
    """Text that matplotlib draws literally: every ``$`` escaped, so no mathtext is parsed."""
    return text.replace("$", r"\$")
