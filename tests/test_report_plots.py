"""The report's plots from hand-made tables shaped like the builder's: what each figure holds
(axes, points, labels, legends, notes), the pure helpers behind it, and values that must not
crash a figure. The figures are real matplotlib figures, written to real files."""

from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text

from greenbench.report import plots, tables
from greenbench.results.stats import confidence_half_width

# ---------------------------------------------------------------------------------------------
# Inputs: the ok runs of a grid, as the results table holds them, and their summary.


def results(models=("gan", "vae"), precisions=("32-true", "bf16-mixed"), widths=(0.5, 1.0),
            fractions=(0.5, 1.0), seeds=(0, 1)) -> pd.DataFrame:
    """One row per ok run, the columns the loader gives; run ids in hash order, like the real
    ones. Energy grows with width and fraction, and the VAE's KID is ~50x the GAN's."""
    rows = []
    for model, precision, width, fraction, seed in itertools.product(
            models, precisions, widths, fractions, seeds):
        key = f"{model}{precision}{width}{fraction}{seed}"
        scale = width * fraction * (0.6 if "16" in precision else 1.0) * (1.5 if model == "vae"
                                                                           else 1.0)
        wobble = 1 + 0.03 * (seed - 0.5)
        row = {"run_id": hashlib.sha256(key.encode()).hexdigest()[:12], "status": "ok",
               "reason": None, "model": model, "dataset": "digits", "image_size": 16,
               "precision": precision, "width": width, "data_fraction": fraction, "seed": seed,
               "repeat": 0, "latent_dim": 32, "batch_size": 64, "epochs": 2, "steps": None,
               "lr": 2e-4, "energy_measured": False, "source_gpu": "unavailable",
               "source_cpu": "codecarbon_cpu_load_estimate",
               "source_ram": "codecarbon_ram_estimate", "node_concurrency": 1,
               "kid": (0.02 if model == "gan" else 1.0) * (1.4 - 0.3 * width - 0.2 * fraction)
               * (1.03 if "16" in precision else 1.0) * wobble}
        for window, share in (("warmup", 8.0), ("train", 100.0), ("eval", 15.0)):
            row[f"energy_{window}_gpu_j"] = math.nan  # no GPU meter
            row[f"energy_{window}_cpu_j"] = 0.4 * share * scale * wobble
            row[f"energy_{window}_ram_j"] = 0.6 * share * scale * wobble
            row[f"energy_{window}_j"] = share * scale * wobble
        row["energy_fit_j"] = row["energy_warmup_j"] + row["energy_train_j"]
        rows.append(row)
    return pd.DataFrame(rows)


def summary_of(runs: pd.DataFrame) -> pd.DataFrame:
    """``tables.summarise``, with the energy_fit_j statistics added where it has none yet."""
    summary = tables.summarise(runs)
    if "energy_fit_j_mean" not in summary:
        stats = []
        for run_ids in summary["run_ids"]:
            values = runs.loc[runs["run_id"].isin(run_ids), "energy_fit_j"].dropna()
            sd = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            stats.append({"energy_fit_j_mean": float(values.mean()), "energy_fit_j_sd": sd,
                          "energy_fit_j_ci": confidence_half_width(sd, len(values)),
                          "energy_fit_j_n": len(values)})
        summary = pd.concat([summary, pd.DataFrame(stats, index=summary.index)], axis=1)
    return summary


def labelled(runs: pd.DataFrame, summary: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """The ok runs with their configuration label, and run id -> label, as the builder has."""
    labels = {run_id: label for label, run_ids in zip(summary["label"], summary["run_ids"],
                                                      strict=True) for run_id in run_ids}
    return runs.assign(label=runs["run_id"].map(labels)), labels


def curves_of(runs: pd.DataFrame, epochs: int = 3) -> pd.DataFrame:
    return pd.DataFrame([
        {"run_id": run["run_id"], "epoch": epoch, "step": 10 * epoch,
         "fit_j": run["energy_fit_j"] * epoch / epochs, "kid": run["kid"] * (1 + 1.0 / epoch),
         "fid": math.nan, "nll_nats": math.nan}
        for _, run in runs.iterrows() for epoch in range(1, epochs + 1)])


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """Every figure a plot function saves, by name, after it was written as usual."""
    saved: dict[str, Figure] = {}
    save = plots._save

    def keep(fig: Figure, out_dir: Path, name: str) -> Path:
        path = save(fig, out_dir, name)
        saved[name] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def written(png: Path | None) -> Path:
    assert png is not None and png.stat().st_size > 0
    assert png.with_suffix(".svg").stat().st_size > 0
    return png


def points(ax) -> np.ndarray:
    """Every (x, y) drawn as a marker in ``ax``: scatter points and line markers."""
    found = [collection.get_offsets() for collection in ax.collections
             if isinstance(collection, PathCollection)]
    found += [np.column_stack(line.get_data()) for line in ax.lines
              if line.get_marker() in ("o", "D")]  # not an error bar's caps
    return np.vstack(found) if found else np.empty((0, 2))


def texts(ax) -> list[Annotation]:
    return [child for child in ax.texts if isinstance(child, Annotation)]


def boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


# ---------------------------------------------------------------------------------------------
# KID against training energy


def test_training_energy_is_the_fit_window_and_older_summaries_fall_back(
        tmp_path: Path, figures: dict[str, Figure]) -> None:
    summary = summary_of(results())
    written(plots.quality_vs_energy(summary, tmp_path / "fit"))
    fig = figures["quality_vs_energy"]
    gan = fig.axes[0]
    assert gan.get_title() == "gan on digits" and gan.get_xlabel() == "training energy (J)"
    expected = summary[summary["model"] == "gan"]
    assert sorted(points(gan)[:, 0]) == pytest.approx(sorted(expected["energy_fit_j_mean"]))

    older = summary.drop(columns=[c for c in summary if c.startswith("energy_fit_j")])
    written(plots.quality_vs_energy(older, tmp_path / "older"))
    gan = figures["quality_vs_energy"].axes[0]
    assert gan.get_xlabel() == "training energy (J), train window only"
    assert sorted(points(gan)[:, 0]) == pytest.approx(sorted(expected["energy_train_j_mean"]))

    no_fit_values = summary.assign(energy_fit_j_mean=math.nan)  # a column, but never a value
    written(plots.quality_vs_energy(no_fit_values, tmp_path / "empty fit"))
    assert "train window only" in figures["quality_vs_energy"].axes[0].get_xlabel()


def test_the_title_names_error_bars_only_when_a_point_has_them(
        tmp_path: Path, figures: dict[str, Figure]) -> None:
    assert "error bars" not in plots.kid_title(0, 4)
    assert plots.kid_title(4, 4).endswith("; error bars: 95 % CI)")
    assert "where a configuration has several runs" in plots.kid_title(1, 4)

    one_run_each = summary_of(results(seeds=(0,)))
    assert one_run_each["energy_fit_j_ci"].isna().all() and one_run_each["kid_ci"].isna().all()
    written(plots.quality_vs_energy(one_run_each, tmp_path))
    fig = figures["quality_vs_energy"]
    assert "error bars" not in fig.get_suptitle()
    assert all(not ax.containers for ax in fig.axes)  # no error bar drawn

    written(plots.quality_vs_energy(summary_of(results()), tmp_path))
    fig = figures["quality_vs_energy"]
    assert "error bars: 95 % CI)" in fig.get_suptitle()
    assert all(ax.containers for ax in fig.axes)


def _assert_labels_clear(fig: Figure) -> list[str]:
    """No two point labels overlap, each lies inside its axes, and no figure legend covers an
    axes; returns the labels' texts."""
    fig.draw_without_rendering()
    drawn = []
    for ax in fig.axes:
        boxes = [Text.get_window_extent(note) for note in texts(ax)]  # the text, not the leader
        for a, b in itertools.combinations(boxes, 2):
            assert not boxes_overlap(a, b)
        for box in boxes:
            assert ax.bbox.x0 <= box.x0 and box.x1 <= ax.bbox.x1
            assert ax.bbox.y0 <= box.y0 and box.y1 <= ax.bbox.y1
        drawn += [note.get_text() for note in texts(ax)]
    for legend in fig.legends:
        assert not any(boxes_overlap(legend.get_window_extent(), ax.bbox) for ax in fig.axes)
    return drawn


def test_eight_configurations_are_labelled_beside_their_points(
        tmp_path: Path, figures: dict[str, Figure]) -> None:
    summary = summary_of(results(fractions=(1.0,), seeds=(0,)))  # the quickstart's shape
    written(plots.quality_vs_energy(summary, tmp_path))
    fig = figures["quality_vs_energy"]
    assert sorted(_assert_labels_clear(fig)) == sorted(summary["label"])
    assert [legend.get_title().get_text() for legend in fig.legends] == [""]  # no key


def test_thirty_two_runs_are_numbered_with_a_key_and_nothing_overprints(
        tmp_path: Path, figures: dict[str, Figure]) -> None:
    summary = summary_of(results())  # 16 configurations of 2 runs
    written(plots.quality_vs_energy(summary, tmp_path))
    fig = figures["quality_vs_energy"]
    numbers = _assert_labels_clear(fig)
    assert sorted(numbers, key=int) == [str(n) for n in range(1, 17)]
    key = next(legend for legend in fig.legends if legend.get_title().get_text() == "key")
    lines = [text.get_text() for text in key.get_texts()]
    # numbered in configuration order: model, precision (most bits first), width, fraction
    assert lines[:3] == ["1  gan 32-true w=0.5 f=0.5", "2  gan 32-true w=0.5 f=1",
                         "3  gan 32-true w=1 f=0.5"]
    assert lines[4] == "5  gan bf16-mixed w=0.5 f=0.5" and lines[8].startswith("9  vae ")


def test_coincident_points_get_separate_labels(tmp_path: Path, figures: dict[str, Figure]) -> None:
    summary = summary_of(results(fractions=(1.0,), seeds=(0,)))
    summary = summary.assign(energy_fit_j_mean=50.0, kid_mean=summary["model"].map(
        {"gan": 0.02, "vae": 1.0}))  # four configurations on one spot in each panel
    written(plots.quality_vs_energy(summary, tmp_path))
    assert len(_assert_labels_clear(figures["quality_vs_energy"])) == 8


def test_place_labels_keeps_boxes_apart_and_off_the_markers() -> None:
    anchors = np.array([[100.0, 100.0]] * 6 + [[112.0, 100.0]])  # six on one spot, one beside
    sizes = [(30.0, 8.0)] * 7
    spots = plots.place_labels(anchors, sizes, (0.0, 0.0, 300.0, 200.0))
    assert None not in spots
    boxes = [(x - w / 2, y - h / 2, x + w / 2, y + h / 2)
             for (x, y), (w, h) in zip(spots, sizes, strict=True)]
    half = plots.MARKER_HALF
    for a, b in itertools.combinations(boxes, 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    for box in boxes:
        assert box[0] >= 0 and box[2] <= 300 and box[1] >= 0 and box[3] <= 200
        for x, y in anchors:
            assert not (box[0] < x + half and x - half < box[2]
                        and box[1] < y + half and y - half < box[3])

    assert plots.place_labels(anchors[:1], [(30.0, 8.0)], (95.0, 95.0, 105.0, 105.0)) == [None]
    nearby = plots.place_labels(anchors, sizes, (0.0, 0.0, 300.0, 200.0), rings=(0.0,))
    assert None in nearby  # seven labels do not all fit right next to their points


# ---------------------------------------------------------------------------------------------
# Energy breakdown


def test_config_order_is_model_precision_width_fraction() -> None:
    frame = pd.DataFrame({
        "model": ["vae", "gan", "gan", "gan", "gan", "gan", "gan", None],
        "precision": ["32-true", "bf16-mixed", "16-mixed", "32-true", "32-true", "64-true",
                      "32-true", "32-true"],
        "width": [1.0, 1.0, 1.0, 2.0, 0.25, 1.0, 1.0, 1.0],
        "data_fraction": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0],
        "tag": list("abcdefgh"),
    })
    assert list(plots.config_order(frame)["tag"]) == list("fegdcbah")


def test_energy_bars_follow_the_configuration_order(
        tmp_path: Path, figures: dict[str, Figure]) -> None:
    runs = results()
    summary = summary_of(runs)
    ok, _ = labelled(runs, summary)
    assert list(ok.sort_values("run_id")["label"]) != list(plots.config_order(ok)["label"])
    written(plots.energy_breakdown(ok.sort_values("run_id"), tmp_path))
    ax = figures["energy_breakdown"].axes[0]
    shown = [tick.get_text() for tick in ax.get_yticklabels()]
    assert shown == list(dict.fromkeys(plots.config_order(ok)["label"]))
    assert shown[:2] == ["gan 32-true w=0.5 f=0.5", "gan 32-true w=0.5 f=1"]
    assert shown[8] == "vae 32-true w=0.5 f=0.5"
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # the first configuration at the top
    # warm-up, train and eval, CPU and RAM: six stacked parts per configuration
    assert len(ax.patches) == 6 * len(shown)


# ---------------------------------------------------------------------------------------------
# KID curves


def test_kid_curves_have_a_panel_per_model_each_on_its_own_scale(
        tmp_path: Path, figures: dict[str, Figure]) -> None:
    runs = results()
    summary = summary_of(runs)
    _, labels = labelled(runs, summary)
    curves = curves_of(runs)
    vae_run = runs.loc[runs["model"] == "vae", "run_id"].iloc[0]
    single = curves[curves["run_id"] == vae_run].tail(1).assign(run_id="lone")
    labels["lone"] = "vae 64-true w=4 f=1"  # a configuration scored once
    written(plots.quality_curves(pd.concat([curves, single]), labels, tmp_path, estimated=True))
    fig = figures["quality_curves"]
    gan, vae = fig.axes
    assert (gan.get_title(), vae.get_title()) == ("gan", "vae")
    assert gan.get_ylim()[1] < 0.1 and vae.get_ylim()[0] > 0.5  # KIDs ~0.02 and ~1
    lines = {text.get_text(): line for text, line in
             zip(vae.get_legend().get_texts(), vae.get_legend().legend_handles, strict=True)}
    assert lines["vae 64-true w=4 f=1"].get_linestyle() == "None"
    assert lines["vae 64-true w=4 f=1"].get_marker() == "o"
    assert lines["vae 32-true w=1 f=1"].get_linestyle() == "-"
    assert len(gan.lines) == 8 and len(vae.lines) == 9
    assert "cumulative training energy (J" in gan.get_xlabel()
    assert plots.ESTIMATED_NOTE in [text.get_text() for text in fig.texts]
    for ax in fig.axes:  # legends beside the panels, never over them
        assert not boxes_overlap(ax.get_legend().get_window_extent(), ax.bbox)


# ---------------------------------------------------------------------------------------------
# Values that must not crash a figure (issue 12)


@pytest.mark.parametrize("bad", [1e308, math.inf, -math.inf, math.nan])
def test_absurd_energies_are_left_out_of_kid_vs_energy(
        bad: float, tmp_path: Path, figures: dict[str, Figure]) -> None:
    summary = summary_of(results(fractions=(1.0,), seeds=(0,)))
    summary.loc[0, "energy_fit_j_mean"] = bad
    summary.loc[1, "energy_fit_j_ci"] = bad
    written(plots.quality_vs_energy(summary, tmp_path))
    fig = figures["quality_vs_energy"]
    assert sum(len(points(ax)) for ax in fig.axes) == len(summary) - 1
    assert all(math.isfinite(limit) for ax in fig.axes for limit in ax.get_xlim())
    notes = [text.get_text() for text in fig.texts]
    if math.isnan(bad):
        assert not any("left out" in note for note in notes)  # missing, not broken
    else:
        assert "2 value(s) left out: not finite or beyond 1e15" in notes


def test_absurd_energies_are_left_out_of_the_bars_and_curves(
        tmp_path: Path, figures: dict[str, Figure]) -> None:
    runs = results(fractions=(1.0,), seeds=(0,))
    ok, labels = labelled(runs, summary_of(runs))
    ok.loc[ok.index[0], "energy_train_cpu_j"] = 1e308
    ok.loc[ok.index[1], "energy_eval_ram_j"] = math.inf
    written(plots.energy_breakdown(ok, tmp_path))
    ax = figures["energy_breakdown"].axes[0]
    assert all(math.isfinite(limit) for limit in ax.get_xlim()) and ax.get_xlim()[1] < 1e3
    assert len(ax.patches) == 6 * 8 - 2
    curves = curves_of(runs)
    curves.loc[curves.index[:2], "fit_j"] = [1e308, -math.inf]
    written(plots.quality_curves(curves, labels, tmp_path))
    fig = figures["quality_curves"]
    assert "2 value(s) left out: not finite or beyond 1e15" in [t.get_text() for t in fig.texts]
    assert all(math.isfinite(limit) for ax in fig.axes for limit in ax.get_xlim())


def test_only_absurd_values_draw_nothing_and_write_nothing(tmp_path: Path) -> None:
    runs = results(seeds=(0,))
    summary = summary_of(runs).assign(energy_fit_j_mean=1e308, energy_train_j_mean=math.inf)
    assert plots.quality_vs_energy(summary, tmp_path) is None
    ok, labels = labelled(runs, summary)
    energy = [column for column in ok if column.startswith("energy_") and "_j" in column]
    assert plots.energy_breakdown(ok.assign(**dict.fromkeys(energy, 1e308)), tmp_path) is None
    assert plots.quality_curves(curves_of(runs).assign(fit_j=math.inf), labels, tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_a_figure_that_fails_to_render_leaves_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    savefig = Figure.savefig

    def failing_svg(self: Figure, target, **kwargs) -> None:
        if kwargs.get("format") == "svg":
            raise RuntimeError("renderer broke")
        savefig(self, target, **kwargs)

    monkeypatch.setattr(Figure, "savefig", failing_svg)
    with pytest.raises(RuntimeError):
        plots.quality_vs_energy(summary_of(results(seeds=(0,))), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_title_names_the_one_metric_and_its_better_corner_and_fits_the_figure(
        tmp_path: Path, figures: dict[str, Figure]) -> None:
    assert plots.metric_title("val_loss", "min", 0, 4) == (
        "val_loss against training energy (lower left is better)")
    assert plots.metric_title("val_acc", "max", 1, 4).startswith(
        "val_acc against training energy (upper left is better; error bars")
    summary = pd.DataFrame({
        "model": "mypkg.Net", "dataset": "mypkg.Data", "label": ["a", "b"],
        "energy_fit_j_mean": [10.0, 20.0], "energy_fit_j_ci": [None, None],
        "quality_metric": "val_loss", "quality_mode": "min", "quality_column": "val_loss",
        "val_loss_mean": [0.5, 0.4], "val_loss_ci": [None, None], "pareto": [True, True],
        "measured": False})
    written(plots.quality_vs_energy(summary, tmp_path))
    title = figures["quality_vs_energy"]._suptitle.get_text()
    assert title.startswith("val_loss against training energy")
    assert max(len(line) for line in title.splitlines()) <= 11 * 5.4  # one panel's width
