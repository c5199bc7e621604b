"""The report's figures, drawn with matplotlib's object-oriented API (no pyplot, no global state).

Each function takes a table, writes ``<name>.png`` (150 dpi, embedded in the HTML report and
linked from the Markdown) and ``<name>.svg`` (vector, its text kept as text) into ``out_dir`` and
returns the PNG's path, or ``None`` when there is nothing to plot.

Every figure names its units, and says so on the figure when any joule it shows is an estimate
rather than a measurement. Text taken from the data (configuration labels, model and dataset
names) is drawn literally: a ``$`` in a label never starts matplotlib's mathtext.
"""

from __future__ import annotations

import math
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

DPI = 150
ESTIMATED_NOTE = "energy: CodeCarbon estimates, not measured"
LOG_SPAN = 10.0  # an energy axis whose values span more than this factor is drawn on a log scale
MAX_LABEL = 40  # characters of a configuration label drawn on a figure

WINDOWS = RUN_PHASES  # the windows of the energy breakdown; idle is a baseline, not a cost
COMPONENT_COLOURS = {"gpu": "#2ca02c", "cpu": "#1f77b4", "ram": "#ff7f0e"}
WINDOW_HATCHES = {"warmup": "////", "train": "", "eval": "...."}
POINT_COLOUR = "#1f77b4"
PARETO_COLOUR = "#d62728"
NOTE_COLOUR = "#a04000"


MAX_NAMED_POINTS = 16  # per panel of kid_vs_energy


def kid_vs_energy(summary: pd.DataFrame, out_dir: Path) -> Path | None:
    """KID against training energy, one panel per (model, dataset), the Pareto front as a step line.

    ``summary`` has one row per configuration: ``model``, ``dataset``, ``label``,
    ``energy_train_j_mean``, ``energy_train_j_ci``, ``kid_mean``, ``kid_ci``, ``pareto`` and
    ``measured``. Rows without an energy or a KID are left out; a NaN interval draws no error bar.
    """
    required = ("model", "dataset", "energy_train_j_mean", "kid_mean")
    if summary.empty or any(column not in summary for column in required):
        return None
    rows = summary.assign(
        energy_train_j_mean=_numbers(summary, "energy_train_j_mean"),
        energy_train_j_ci=_numbers(summary, "energy_train_j_ci"),
        kid_mean=_numbers(summary, "kid_mean"),
        kid_ci=_numbers(summary, "kid_ci"),
    ).dropna(subset=["energy_train_j_mean", "kid_mean"])
    if rows.empty:
        return None

    panels = list(rows.groupby(["model", "dataset"], sort=True, dropna=False))
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.4 * ncols, 4.4 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, ((model, dataset), panel) in zip(axes, panels, strict=False):
        _kid_panel(ax, panel)
        ax.set_title(_plain(f"{_text(model)} on {_text(dataset)}"))
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    fig.suptitle("KID against training energy (error bars: 95 % CI; lower left is better)")
    return _save(fig, out_dir, "kid_vs_energy", estimated=not _all_true(rows, "measured"))


def _kid_panel(ax: Axes, rows: pd.DataFrame) -> None:
    """One (model, dataset) panel of ``kid_vs_energy``."""
    energy = rows["energy_train_j_mean"].to_numpy(float)
    kid = rows["kid_mean"].to_numpy(float)
    energy_ci = rows["energy_train_j_ci"].to_numpy(float)
    kid_ci = rows["kid_ci"].to_numpy(float)
    log = _log_scale(energy)
    if log:
        _log_x(ax)

    has_x, has_y = np.isfinite(energy_ci), np.isfinite(kid_ci)
    if has_x.any():
        # On a log axis an interval reaching zero or below is cut just above zero.
        lower = np.minimum(energy_ci, 0.99 * energy) if log else energy_ci
        ax.errorbar(energy[has_x], kid[has_x], xerr=[lower[has_x], energy_ci[has_x]],
                    fmt="none", ecolor="0.6", elinewidth=1, capsize=2, zorder=1)
    if has_y.any():
        ax.errorbar(energy[has_y], kid[has_y], yerr=kid_ci[has_y],
                    fmt="none", ecolor="0.6", elinewidth=1, capsize=2, zorder=1)

    pareto = np.array([_true(value) for value in _column(rows, "pareto")], dtype=bool)
    handles, names = [], []
    if (~pareto).any():
        handles.append(ax.scatter(energy[~pareto], kid[~pareto], s=28, color=POINT_COLOUR,
                                  zorder=3))
        names.append("configuration")
    if pareto.any():
        order = np.argsort(energy[pareto], kind="stable")
        (front,) = ax.step(energy[pareto][order], kid[pareto][order], where="post",
                           color=PARETO_COLOUR, linewidth=1.5, marker="D", markersize=5, zorder=4)
        handles.append(front)
        names.append("Pareto front")
    ax.legend(handles, names, fontsize=8, loc="upper right")  # "best" is slow for many points

    # Name every point while that stays legible; with many, name the Pareto front only.
    named = np.ones_like(pareto) if len(rows) <= MAX_NAMED_POINTS else pareto
    labels = _column(rows, "label")
    for x, y, label, name in zip(energy, kid, labels, named, strict=True):
        if not name:
            continue
        ax.annotate(_plain(_short(_text(label))), (x, y), xytext=(5, 4),
                    textcoords="offset points", fontsize=7.5, color="0.2")
    ax.set_xlabel("training energy, mean (J" + (", log scale)" if log else ")"))
    ax.set_ylabel("KID, mean (lower is better)")
    ax.grid(True, which="major", alpha=0.3)


def energy_breakdown(results: pd.DataFrame, out_dir: Path) -> Path | None:
    """Stacked bars per configuration ``label``: mean joules per window and component.

    ``results`` holds the ok runs, one row each, with a ``label`` column and the
    ``energy_<window>_<component>_j`` columns. A component without a value (no meter for it) is
    left out of the bar, never drawn as 0 J; the mean is over the runs that have a value.
    """
    columns = [f"energy_{window}_{component}_j" for window in WINDOWS for component in COMPONENTS]
    columns = [column for column in columns if column in results]
    if results.empty or "label" not in results or not columns:
        return None
    energy = pd.DataFrame({column: _numbers(results, column) for column in columns})
    energy["label"] = [_text(label) for label in results["label"]]
    means = energy.groupby("label", sort=False)[columns].mean().dropna(how="all")
    if means.empty:
        return None

    fig = Figure(figsize=(9.5, max(3.2, 0.45 * len(means) + 2.0)), layout="constrained")
    ax = fig.add_subplot()
    positions = np.arange(len(means))
    stacked = np.zeros(len(means))
    drawn_parts: list[tuple[str, str]] = []  # (window, component) with at least one bar
    for window in WINDOWS:
        for component in COMPONENTS:
            column = f"energy_{window}_{component}_j"
            if column not in means:
                continue
            values = means[column].to_numpy(float)
            drawn = np.isfinite(values)
            if not drawn.any():
                continue
            ax.barh(positions[drawn], values[drawn], left=stacked[drawn], height=0.62,
                    color=COMPONENT_COLOURS[component], hatch=WINDOW_HATCHES[window],
                    edgecolor="white", linewidth=0.8)
            stacked[drawn] += values[drawn]
            drawn_parts.append((window, component))

    for position, total in zip(positions, stacked, strict=True):
        ax.text(total, position, f" {_joules(total)}", va="center", fontsize=8, color="0.25")
    ax.set_yticks(positions, labels=[_plain(_short(label)) for label in means.index])
    ax.invert_yaxis()
    ax.margins(x=0.14)
    ax.set_xlim(left=0)
    ax.set_xlabel("energy (J)")
    ax.grid(True, axis="x", alpha=0.3)
    if means.isna().to_numpy().any():
        ax.set_title("components without a value had no meter: left out, not counted as 0 J",
                     fontsize=8.5, color="0.35")

    components = [c for c in COMPONENTS if any(c == part[1] for part in drawn_parts)]
    windows = [w for w in WINDOWS if any(w == part[0] for part in drawn_parts)]
    handles = [Patch(facecolor=COMPONENT_COLOURS[c], label=c.upper()) for c in components]
    handles += [Patch(facecolor="0.55", edgecolor="white", hatch=WINDOW_HATCHES[w],
                      label=f"{w} window") for w in windows]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8.5)
    fig.suptitle("Energy per configuration by window and component (mean over ok runs)")
    estimated = "energy_measured" in results and not _all_true(results, "energy_measured")
    return _save(fig, out_dir, "energy_breakdown", estimated=estimated)


def kid_curves(curves: pd.DataFrame, labels: dict[str, str], out_dir: Path, *,
               estimated: bool = False) -> Path | None:
    """KID against the training energy spent so far, one line per configuration label.

    ``curves`` is the long table of quality curves (``run_id``, ``epoch``, ``step``,
    ``train_j``, ``kid``, ...); ``labels`` maps a run id to its configuration label (a run missing
    from it is labelled by its id). Each line is the mean over a configuration's runs at each
    scored epoch (runs of one configuration are scored at the same epochs), so the plot stays
    readable, and quick to draw, for thousands of runs. A single scored point shows as a marker.
    ``estimated`` puts the estimated-energy note on the figure (the curves carry no provenance).
    """
    if curves.empty or any(column not in curves for column in ("run_id", "train_j", "kid")):
        return None
    points = curves.assign(train_j=_numbers(curves, "train_j"), kid=_numbers(curves, "kid"))
    points = points.dropna(subset=["train_j", "kid"])
    if points.empty:
        return None
    points["label"] = [_text(labels.get(run_id, run_id)) for run_id in points["run_id"]]
    order = "epoch" if "epoch" in points else "step"
    means = points.groupby(["label", order], sort=False)[["train_j", "kid"]].mean().reset_index()
    colours = _colours(list(dict.fromkeys(means["label"])))

    fig = Figure(figsize=(9.5, 5.2), layout="constrained")
    ax = fig.add_subplot()
    legend: dict[str, Line2D] = {}
    for label, line_points in means.groupby("label", sort=False):
        line_points = line_points.sort_values(order, kind="stable")
        (line,) = ax.plot(line_points["train_j"].to_numpy(float),
                          line_points["kid"].to_numpy(float), color=colours[label], marker="o",
                          markersize=3.5, linewidth=1.3, alpha=0.9)
        legend[label] = line
    if _log_scale(points["train_j"].to_numpy(float)):
        _log_x(ax)
        ax.set_xlabel("cumulative training energy (J, log scale)")
    else:
        ax.set_xlabel("cumulative training energy (J)")
    ax.set_ylabel("KID (lower is better)")
    ax.grid(True, alpha=0.3)
    # Explicit labels: a label starting with "_" would otherwise be dropped from the legend.
    fig.legend(list(legend.values()), [_plain(_short(label)) for label in legend],
               title="configuration", loc="outside right upper", fontsize=8)
    fig.suptitle("KID during training against the training energy spent so far")
    return _save(fig, out_dir, "kid_curves", estimated=estimated)


def _save(fig: Figure, out_dir: Path, name: str, *, estimated: bool) -> Path:
    """Write ``name``.png and ``name``.svg, with the estimated-energy note when it applies."""
    if estimated:
        strip = 0.32 / fig.get_figheight()  # a strip at the bottom, outside the layout
        fig.get_layout_engine().set(rect=(0, strip, 1, 1 - strip))
        fig.text(0.5, strip / 2, ESTIMATED_NOTE, ha="center", va="center", fontsize=9.5,
                 style="italic", color=NOTE_COLOUR)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    fig.savefig(png, dpi=DPI, facecolor="white")
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(out_dir / f"{name}.svg", facecolor="white", metadata={"Date": None})
    return png


def _numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats (NaN where missing or not a number); all NaN when there is none."""
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def _column(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column] if column in frame else pd.Series(None, index=frame.index, dtype=object)


def _true(value: Any) -> bool:
    """True for a true flag; False for false, None and NaN."""
    return _text(value) != "" and bool(value)


def _all_true(frame: pd.DataFrame, column: str) -> bool:
    """Whether every row's flag is true (an absent column or a missing flag is not)."""
    return column in frame and all(_true(value) for value in frame[column])


def _log_scale(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return bool(finite.size) and finite.min() > 0 and finite.max() / finite.min() > LOG_SPAN


def _log_x(ax: Axes) -> None:
    """A log x axis whose ticks read as plain numbers (300, not 3 x 10^2)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False))


def _colours(labels: list[str]) -> dict[str, Any]:
    """One colour per label, in order: tab10, or tab20 for more than ten labels (then repeated)."""
    cmap = mpl.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _joules(value: float) -> str:
    return f"{value:,.0f} J" if value >= 10 else f"{value:.2g} J"


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
