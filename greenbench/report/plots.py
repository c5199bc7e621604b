"""The report's figures, drawn with matplotlib's object-oriented API (no pyplot, no global state).

Each function writes ``<name>.png`` (150 dpi) and ``<name>.svg`` (text as text) into ``out_dir``,
rendered in memory then written atomically (never an empty file), and returns the PNG's path, or
``None`` when there is nothing to plot. Figures name their units and say when joules are
estimated; a value not finite or beyond ``MAX_VALUE`` is left out and counted on the figure.
Data text is drawn literally (``$`` is no mathtext); point labels never overprint each other.
"""

from __future__ import annotations

import math
import re
import textwrap
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
from greenbench.records import DEFAULT_QUALITY
from greenbench.report.labels import (
    CLASS_PATH,
    MARKER_HALF,
    column_of,
    compact,
    flags_of,
    label_points,
    place_labels,
)
from greenbench.report.labels import plain as _plain
from greenbench.report.labels import short as _short
from greenbench.report.labels import text as _text
from greenbench.results import quality_columns
from greenbench.results.quality import direction

__all__ = [
    "ESTIMATED_NOTE",
    "MARKER_HALF",
    "config_order",
    "energy_breakdown",
    "kid_title",
    "metric_title",
    "place_labels",
    "quality_curves",
    "quality_vs_energy",
]

DPI = 150
ESTIMATED_NOTE = "energy: CodeCarbon estimates, not measured"
LOG_SPAN = 10.0  # an axis whose values span more than this factor is drawn on a log scale
MAX_VALUE = 1e15  # |value| beyond this (J or KID) is no measurement: left out, and counted
ORDER_KEYS = ("model", "dataset", "precision", "width", "data_fraction")  # bars and numbers

WINDOWS = RUN_PHASES  # the windows of the energy breakdown; idle is a baseline, not a cost
COMPONENT_COLOURS = {"gpu": "#2ca02c", "cpu": "#1f77b4", "ram": "#ff7f0e"}
WINDOW_HATCHES = {"warmup": "////", "train": "", "eval": "....", "generate": "xx"}
POINT_COLOUR, PARETO_COLOUR, NOTE_COLOUR = "#1f77b4", "#d62728", "#a04000"
KID = DEFAULT_QUALITY["metric"]  # the quality of a configuration that names no other


def quality_vs_energy(summary: pd.DataFrame, out_dir: Path) -> Path | None:
    """Quality against training energy, one panel per (model, dataset), the Pareto front as a
    step line: KID, or the configurations' own ``quality_metric`` where it is another.

    ``summary`` has one row per configuration: ``model``, ``dataset``, ``label``,
    ``energy_fit_j_mean`` and ``_ci`` (training energy: warm-up plus train; else the axis says
    it is ``energy_train_j_*``, the train window), ``kid_mean``, ``kid_ci`` (or, where
    ``quality_column`` names another, that column's ``_mean`` and ``_ci``, in the direction of
    ``quality_metric`` and ``quality_mode``), ``pareto``, ``measured``, and the config columns
    that number the points (``config_order``).
    """
    fit = _cleaned(summary, {"energy_fit_j_mean": "fit"})[0]["fit"].notna().any()
    energy = "energy_fit_j" if fit else "energy_train_j"
    summary = _with_quality(summary)
    needed = ("model", "dataset", f"{energy}_mean", "quality_y_mean")
    if summary.empty or any(column not in summary for column in needed):
        return None
    rows, left_out = _cleaned(summary, {f"{energy}_mean": "x", f"{energy}_ci": "x_ci",
                                        "quality_y_mean": "y", "quality_y_ci": "y_ci"})
    rows = config_order(rows.dropna(subset=["x", "y"]))
    if rows.empty:
        return None
    rows["label"] = _point_labels(rows)

    panels = list(rows.groupby(["model", "dataset", "quality_y_metric", "quality_y_mode"],
                               sort=False, dropna=False))
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.4 * ncols, 4.4 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    xlabel = "training energy (J)" if fit else "training energy (J), train window only"
    for ax, ((model, dataset, metric, mode), panel) in zip(axes, panels, strict=False):
        _quality_panel(ax, panel, xlabel, _quality_label(metric, mode))
        ax.set_title(_plain(f"{_text(model)} on {_text(dataset)}"))
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    with_bars = int((rows["x_ci"].notna() | rows["y_ci"].notna()).sum())
    metrics = set(zip(rows["quality_y_metric"], rows["quality_y_mode"], strict=True))
    if {metric for metric, _ in metrics} == {KID}:
        title = kid_title(with_bars, len(rows))
    elif len(metrics) == 1:
        title = metric_title(*metrics.pop(), with_bars, len(rows))
    else:
        title = quality_title(with_bars, len(rows))
    # wrapped to the figure's width (about 11 characters an inch), never cut off at its sides
    fig.suptitle(textwrap.fill(title, width=int(11 * 5.4 * ncols)))
    legend = [Line2D([], [], linestyle="none", marker="o", markersize=5, color=POINT_COLOUR,
                     label="configuration"),
              Line2D([], [], color=PARETO_COLOUR, marker="D", markersize=5, label="Pareto front")]
    _notes(fig, estimated=not flags_of(rows, "measured").all(), left_out=left_out, legend=legend)
    label_points(fig, [(ax, panel) for ax, (_, panel) in zip(axes, panels, strict=False)])
    return _save(fig, out_dir, "quality_vs_energy")


def _with_quality(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with each configuration's quality as ``quality_y_mean`` and ``_ci`` (its
    ``quality_column``, else KID), and the metric and its mode as ``quality_y_metric`` and
    ``quality_y_mode``."""
    out = summary.copy()
    default = pd.Series(KID, index=out.index, dtype=object)
    metric = out["quality_metric"].fillna(KID) if "quality_metric" in out else default
    column = out["quality_column"].fillna(metric) if "quality_column" in out else metric
    mode = (out["quality_mode"] if "quality_mode" in out
            else pd.Series(DEFAULT_QUALITY["mode"], index=out.index, dtype=object))
    out["quality_y_metric"], out["quality_y_mode"] = metric.map(str), mode.map(_text)
    for statistic in ("mean", "ci"):
        values = [row.get(f"{name}_{statistic}", np.nan) for name, (_, row)
                  in zip(column, out.iterrows(), strict=True)]
        if any(f"{name}_mean" in out for name in set(column)):
            out[f"quality_y_{statistic}"] = pd.Series(values, index=out.index, dtype=object)
    return out


def _point_labels(rows: pd.DataFrame) -> list[str]:
    """The labels beside the points (``compact``); on the panel of a user's class, without the
    model and dataset that its title names."""
    labels = compact([_text(label) for label in column_of(rows, "label")])
    out = []
    for label, model, dataset in zip(labels, column_of(rows, "model"),
                                      column_of(rows, "dataset"), strict=True):
        words = label.split(" ")
        if CLASS_PATH.fullmatch(_text(model)) and len(words) > 1:
            words = words[1:]
            if len(words) > 1 and words[0] in (_text(dataset), compact([_text(dataset)])[0]):
                words = words[1:]
        out.append(" ".join(words))
    return out


def _quality_label(metric: str, mode: str) -> str:
    """The y axis of a ``quality_vs_energy`` panel: the metric and which way is better."""
    if metric == KID:
        return "KID, mean (lower is better)"
    return _plain(f"{metric}, mean ({direction(metric, mode or None)})")


def kid_title(with_bars: int, points: int) -> str:
    """The title of ``quality_vs_energy``: it names error bars only when some point has them."""
    return f"KID against training energy (lower left is better{_bars(with_bars, points)})"


def metric_title(metric: str, mode: str, with_bars: int, points: int) -> str:
    """The title of ``quality_vs_energy`` when every panel's quality is one metric, not KID."""
    better = direction(metric, mode or None)
    corner = {"lower is better": "lower left is better",
              "higher is better": "upper left is better"}.get(better, better)
    return _plain(f"{metric} against training energy ({corner}{_bars(with_bars, points)})")


def quality_title(with_bars: int, points: int) -> str:
    """The title of ``quality_vs_energy`` when its panels' quality metrics differ."""
    return ("Quality against training energy (each panel's metric says which way is better"
            f"{_bars(with_bars, points)})")


def _bars(with_bars: int, points: int) -> str:
    return "" if not with_bars else "; error bars: 95 % CI" + (
        "" if with_bars == points else ", where a configuration has several runs")


def _quality_panel(ax: Axes, rows: pd.DataFrame, xlabel: str, ylabel: str) -> None:
    """One (model, dataset) panel of ``quality_vs_energy``: points, bars and front, no labels."""
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
    pareto = flags_of(rows, "pareto")
    if (~pareto).any():
        ax.scatter(energy[~pareto], kid[~pareto], s=28, color=POINT_COLOUR, zorder=3)
    if pareto.any():
        order = np.argsort(energy[pareto], kind="stable")
        ax.step(energy[pareto][order], kid[pareto][order], where="post", color=PARETO_COLOUR,
                linewidth=1.5, marker="D", markersize=5, zorder=4)
    ax.margins(0.1)
    ax.set_xlabel(xlabel + (", log scale" if log else ""))
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


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
    energy["label"] = compact([_text(label) for label in energy["label"]])
    energy["model"] = [_text(model) for model in column_of(energy, "model")]
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
    estimated = "energy_measured" in results and not flags_of(results, "energy_measured").all()
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


def quality_curves(curves: pd.DataFrame, labels: dict[str, str], out_dir: Path, *,
               estimated: bool = False, quality: dict[str, tuple[str, Any]] | None = None
               ) -> Path | None:
    """KID against the training energy spent so far, one panel per model on its own KID scale;
    runs whose quality is another metric are drawn on a panel of that metric.

    ``curves``: ``run_id``, ``epoch``, ``step``, ``fit_j``, ``kid``...; ``labels``: run id to
    configuration label (else the id); ``quality``: run id to its quality metric and mode,
    where it is not KID (its values in the curves column ``quality_columns`` names). The model
    is the ``model`` column, else the label's first word. A line is the mean of a
    configuration's runs at each scored epoch (quick for thousands of runs); one scored point
    is a marker. ``estimated`` adds the estimated-energy note.
    """
    if curves.empty or any(column not in curves for column in ("run_id", "fit_j")):
        return None
    own = quality or {}
    labels = dict(zip(labels, compact([_text(label) for label in labels.values()]), strict=True))
    metrics = curves["run_id"].map(lambda run: str(own.get(run, (KID,))[0]))
    modes = {str(metric): mode for metric, mode in own.values()}
    points, left_out = _cleaned(curves.assign(quality_y=_own_values(curves, metrics)),
                                {"fit_j": "fit_j", "quality_y": "y"})
    points = points.assign(metric=metrics).dropna(subset=["fit_j", "y"])
    if points.empty:
        return None
    points["label"] = [_text(labels.get(run_id, run_id)) for run_id in points["run_id"]]
    points["model"] = ([_text(model) for model in points["model"]] if "model" in points
                       else [label.split(" ", 1)[0] for label in points["label"]])
    order = "epoch" if "epoch" in points else "step"
    means = (points.groupby(["model", "metric", "label", order], sort=False)[["fit_j", "y"]]
             .mean().reset_index())
    panels = sorted(set(zip(means["model"], means["metric"], strict=True)))
    order_of = {label: i for i, label in enumerate(dict.fromkeys(labels.values()))}  # tables'

    fig = Figure(figsize=(9.5, 3.5 * len(panels) + 1.0), layout="constrained")
    for ax, (model, metric) in zip(fig.subplots(len(panels), 1, squeeze=False).ravel(), panels,
                                   strict=True):
        panel = means[(means["model"] == model) & (means["metric"] == metric)]
        names = sorted(set(panel["label"]), key=lambda name: (order_of.get(name, math.inf), name))
        cmap = mpl.colormaps["tab10" if len(names) <= 10 else "tab20"]  # repeated past 20
        colours, handles = {name: cmap(i % cmap.N) for i, name in enumerate(names)}, []
        for label in names:
            line = panel[panel["label"] == label].sort_values(order, kind="stable")
            single = len(line) == 1
            handles += ax.plot(line["fit_j"].to_numpy(float), line["y"].to_numpy(float),
                               color=colours[label], marker="o", markersize=6 if single else 3.5,
                               linestyle="none" if single else "-", linewidth=1.3, alpha=0.9)
        log_x, log_y = _log_scale(panel["fit_j"].to_numpy()), _log_scale(panel["y"].to_numpy())
        if log_x:
            _log_x(ax)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("cumulative training energy (J" + (", log scale)" if log_x else ")"))
        better = direction(metric, modes.get(metric, DEFAULT_QUALITY["mode"]))
        ax.set_ylabel(_plain(f"{'KID' if metric == KID else metric} ({better}")
                      + ("; log scale)" if log_y else ")"))
        ax.set_title(_plain(model if metric == KID else f"{model}: {metric}"), fontsize=10)
        ax.grid(True, alpha=0.3)
        # Explicit labels: a label starting with "_" would otherwise be dropped from the legend.
        ax.legend(handles, [_plain(_short(label)) for label in names], loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), fontsize=7.5, title="configuration",
                  title_fontsize=8, ncols=math.ceil(len(names) / 14))
    fig.suptitle("KID during training against the training energy spent so far "
                 "(each model on its own KID scale)" if {m for _, m in panels} == {KID} else
                 "Quality during training against the training energy spent so far "
                 "(each model and metric on its own scale)")
    _notes(fig, estimated=estimated, left_out=left_out)
    return _save(fig, out_dir, "quality_curves")


def _own_values(curves: pd.DataFrame, metric_of: pd.Series) -> pd.Series:
    """Each curve point's quality: its run's metric's column (``kid`` for most)."""
    values = pd.Series(np.nan, index=curves.index, dtype=object)
    for metric in set(metric_of):
        column = metric if metric in curves else quality_columns(metric)[0]
        if column in curves:
            chosen = metric_of == metric
            values[chosen] = curves.loc[chosen, column]
    return values


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


def _log_scale(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return bool(finite.size) and finite.min() > 0 and finite.max() / finite.min() > LOG_SPAN


def _log_x(ax: Axes) -> None:
    """A log x axis whose ticks read as plain numbers (300, not 3 x 10^2)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False,
                                                     minor_thresholds=(2, 0.5)))
