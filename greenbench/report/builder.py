"""Building a report: records in, files out.

``build(folders, out_dir, baseline)`` reads the records of one or more sweep folders (through
``greenbench.results``, the loader ``check`` shares), summarises them (``tables``), draws the
plots (``plots``) and writes ``report.md``, ``report.html``, ``results.csv``,
``results.parquet`` and the plot files into ``out_dir`` (by default ``report/`` in the first
sweep folder). It never runs a model.

A report is written whole or not at all: everything goes into a temporary folder beside
``out_dir``, which replaces ``out_dir`` only once every file in it is complete. In
``results.csv`` (RFC 4180: CRLF rows) a text cell that a spreadsheet would run as a formula gets a
leading ``'``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from greenbench import __version__, environment, results
from greenbench.errors import UserError
from greenbench.files import FILE_MODE, atomic_write, fsync_directory
from greenbench.records import NOT_OK, OK, last_line
from greenbench.report import notes, plots, tables
from greenbench.report.render import ReportContent, html, markdown
from greenbench.results.quality import higher_is_better
from greenbench.store import SweepStore

REPORT_FOLDER = "report"  # the default out_dir, inside the first sweep folder
REPORT_FILES = frozenset({"report.md", "report.html", "results.csv", "results.parquet"})
PLOT_SUFFIXES = (".png", ".svg")
# A CSV cell starting with one of these is a formula to a spreadsheet (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# The record warning of a machine whose meters see no difference between training and idling.
_DIR_MODE = FILE_MODE | (FILE_MODE & 0o444) >> 2  # what mkdir would give: mkdtemp's 0700 hides


def build(
    folders: list[Path], out_dir: Path, baseline: dict[str, Any] | None = None,
    records: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Write the report of ``folders`` (or of ``records`` read from them) into ``out_dir``;
    returns the files written."""
    if records is None:
        records = results.read_records(folders)
    if not records:
        raise UserError(f"{', '.join(map(str, folders))}: no record this greenbench reads "
                        "(every file in records/ was skipped)")
    problems: list[str] = []
    frame = with_predictions(results.frame(records, problems), results.predictions(folders))
    curves = results.load_curves(records, problems)
    summary = tables.summarise(frame)
    savings = tables.savings(summary, baseline)

    target = Path(out_dir)
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        os.chmod(staging, _DIR_MODE)
        names = _write(staging, folders, frame, summary, savings, curves, baseline, problems)
        _replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [target / name for name in names]


def with_predictions(frame: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """The results with the training energy a plan predicted for each run, where one did."""
    if predicted.empty:
        return frame
    return frame.merge(predicted, on="run_id", how="left")


def default_out_dir(folders: list[Path]) -> Path:
    """``report/`` inside the first sweep folder (``runs/<name>/report``): results stay beside
    the records they come from, out of the source tree."""
    return Path(folders[0]) / REPORT_FOLDER


def _write(out_dir: Path, folders: list[Path], frame: pd.DataFrame, summary: pd.DataFrame,
           savings: pd.DataFrame, curves: pd.DataFrame, baseline: dict[str, Any] | None,
           problems: list[str]) -> list[str]:
    """Every file of the report into ``out_dir``; their names."""
    labels = tables.run_labels(summary)
    ok = frame[frame["status"] == OK].assign(label=frame["run_id"].map(labels))
    estimated = not summary.loc[summary["n"] > 0, "measured"].all()
    others = tables.other_metrics(summary)
    quality = "KID" if not others else f"Quality (KID, or a model's own: {', '.join(others)})"
    figures = [
        (f"{quality} against training energy (warm-up plus train); the line joins the "
         "Pareto-optimal configurations",
         _draw("quality_vs_energy", lambda: plots.quality_vs_energy(summary, out_dir))),
        ("Energy by window and component, mean over runs",
         _draw("energy_breakdown", lambda: plots.energy_breakdown(ok, out_dir))),
        (f"{quality} against cumulative training energy along training",
         _draw("quality_curves", lambda: plots.quality_curves(curves, labels, out_dir,
                                                      estimated=estimated,
                                                      quality=_qualities(frame)))),
    ]
    content = ReportContent(
        title=f"greenbench report: {', '.join(_names(folders))}",
        sweeps=[SweepStore(folder).description() for folder in folders],
        status_counts=frame["status"].value_counts().to_dict(),
        tables=[
            ("Energy and cost", _ENERGY_NOTE, energy_table(summary)),
            ("Quality", _QUALITY_NOTE + _other_quality_note(others), quality_table(summary)),
            ("Savings against the baseline", _savings_note(baseline, summary),
             savings_table(savings)),
        ],
        notes=notes.notes(frame, summary, problems),
        plots=[(caption, path) for caption, path in figures if path is not None],
        generated=_generated(),
    )
    names = []
    for name, text in (("report.md", markdown(content, out_dir)), ("report.html", html(content))):
        atomic_write(out_dir / name, text.encode("utf-8"))
        names.append(name)
    # CRLF ends a row (RFC 4180), so a cell holding a lone carriage return is quoted too.
    text = csv_safe(frame).to_csv(index=False, lineterminator="\r\n")
    atomic_write(out_dir / "results.csv", text.encode("utf-8"))
    try:
        parquet = frame.to_parquet(index=False)
    except (ValueError, TypeError, OverflowError) as error:  # pyarrow's, on a column it refuses
        raise UserError(f"results.parquet cannot be written from these records "
                        f"({last_line(error)}); nothing written") from None
    atomic_write(out_dir / "results.parquet", parquet)
    names += ["results.csv", "results.parquet"]
    for _, png in content.plots:
        names += [png.name, png.with_suffix(".svg").name]
    for name in names:
        path = out_dir / name
        if not path.is_file() or path.stat().st_size == 0:
            raise UserError(f"{name} came out empty; nothing written")
    return names


def _qualities(frame: pd.DataFrame) -> dict[str, tuple[str, Any]]:
    """run_id -> its quality metric and mode, for the runs whose metric is not KID."""
    if "quality_metric" not in frame:
        return {}
    mode = frame["quality_mode"] if "quality_mode" in frame else pd.Series(None, index=frame.index)
    return {run: (str(metric), how) for run, metric, how
            in zip(frame["run_id"], frame["quality_metric"], mode, strict=True)
            if isinstance(metric, str) and metric != tables.PARETO_QUALITY}


def _draw(name: str, draw: Callable[[], Path | None]) -> Path | None:
    """A plot, or one line saying why it cannot be drawn (and the report is not written)."""
    try:
        return draw()
    except Exception as error:  # a plot the records break: one line, no half-written report
        raise UserError(f"the {name} plot cannot be drawn from these records "
                        f"({last_line(error)}); nothing written") from None


def _check_replaceable(target: Path) -> None:
    """A ``UserError`` unless ``target`` is absent or a folder holding only report files."""
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise UserError(f"{target}: exists and is not a folder; choose another --out")
    here = Path.cwd().resolve()
    if target.resolve() in (here, *here.parents):
        raise UserError(f"{target}: holds the current folder; choose another --out")
    for entry in sorted(target.iterdir()):
        report_file = entry.name in REPORT_FILES or entry.suffix in PLOT_SUFFIXES
        if entry.is_symlink() or not entry.is_file() or not report_file:
            raise UserError(f"{target}: holds {entry.name!r}, which a report does not write; "
                            "not replacing it (choose another --out, or remove the folder)")


def _replace(staging: Path, target: Path) -> None:
    """Rename the complete report folder ``staging`` to ``target``, replacing a previous one."""
    if target.exists() or target.is_symlink():
        old = staging.with_name(staging.name + ".old")
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(old, target)
            raise
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, target)
    fsync_directory(target.parent)


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that starts like a formula (``=``, ``+``, ``-``, ``@``,
    tab, carriage return) prefixed with ``'``; numbers, negative ones too, stay numbers."""
    def quoted(value: Any) -> Any:
        return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value

    safe = frame.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]):
            safe[column] = safe[column].map(quoted)
    return safe


def _names(folders: list[Path]) -> list[str]:
    return [SweepStore(folder).description()[0] for folder in folders]


_ENERGY_NOTE = (
    "Means over seeds and repeats of ok runs, with 95 % Student-t intervals (a configuration "
    "with one run has none). Training energy is everything fit spent training: warm-up plus "
    "train. Steady state is the train window alone, after warm-up (empty for a run that never "
    "left warm-up); net is minus idle power over the same time; CO2 is of the whole run "
    "(warm-up, train, eval)."
)
_QUALITY_NOTE = (
    "Scores at the end of training, in the pinned feature extractor's space (lower KID, FID and "
    "memorisation are better; higher precision and recall). Pareto: no other configuration of "
    "the same model and dataset has both lower training energy and lower KID."
)


def _other_quality_note(others: list[str]) -> str:
    if not others:
        return ""
    return (f" A model whose quality is another metric ({', '.join(others)}: see the Notes) is "
            "marked by that metric, in its direction, instead of KID.")


def _savings_note(baseline: dict[str, Any] | None, summary: pd.DataFrame | None = None) -> str:
    chosen = baseline or tables.DEFAULT_BASELINE
    described = ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
                          for key, value in chosen.items())
    others = [] if summary is None else tables.other_metrics(summary)
    directions = "; ".join(f"{metric}: {'above' if higher else 'below'} 1 is better"
                           for metric, higher in _directions(summary, others))
    own = f" A model's own quality metric is compared too ({directions})." if others else ""
    return (f"Ratios of training energy and of KID to the baseline of the same model "
            f"({described}); below 1 is less energy or better KID.{own} Intervals need at "
            "least two runs on each side.")


def _directions(summary: pd.DataFrame | None, metrics: list[str]) -> list[tuple[str, bool]]:
    """Each of ``metrics`` with whether higher is better (those with a direction)."""
    found = []
    for metric in metrics:
        modes = summary.loc[summary["quality_metric"] == metric, "quality_mode"]
        higher = higher_is_better(metric, modes.dropna().iloc[0] if modes.notna().any() else None)
        if higher is not None:
            found.append((metric, higher))
    return found


def _mean(row: pd.Series, metric: str, digits: int = 4) -> str:
    mean, ci, n = row[f"{metric}_mean"], row[f"{metric}_ci"], row[f"{metric}_n"]
    if not n or not math.isfinite(mean):
        return "-"
    if math.isfinite(ci):
        return f"{mean:.{digits}g} ± {ci:.2g}"
    return f"{mean:.{digits}g}" + (" (one run)" if n == 1 else "")


def _plain(row: pd.Series, metric: str, digits: int = 4, scale: float = 1.0) -> str:
    value = row[f"{metric}_mean"]
    return f"{value * scale:.{digits}g}" if math.isfinite(value) else "-"


UNRELIABLE = " *"  # after a figure from a window some run could not measure reliably


def _judged(text: str, row: pd.Series, window: str) -> str:
    """``text`` marked when a run of the configuration had an unreliable ``window``."""
    return text + UNRELIABLE if text != "-" and row.get(f"n_unreliable_{window}", 0) else text


def _runs(row: pd.Series) -> str:
    parts = [str(row["n"])] + [f"{row[f'n_{s}']} {s}" for s in NOT_OK if row[f"n_{s}"]]
    return ", ".join(parts)


def _init_args(summary: pd.DataFrame) -> Callable[[pd.Series], dict[str, str]]:
    """A row's varied init args (``model.init_args.lr``: ``0.01``), as table cells."""
    varied = tables.varied_arguments(summary)
    return lambda row: {column: "-" if _missing(row[column]) else tables.config_text(row[column])
                        for column in varied}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def energy_table(summary: pd.DataFrame) -> pd.DataFrame:
    init_args = _init_args(summary)
    return pd.DataFrame([{
        "configuration": row["label"],
        **init_args(row),
        "ok runs": _runs(row),
        "training energy (J)": _judged(_mean(row, tables.TRAINING_ENERGY), row, "fit"),
        **_predicted(row),
        "net of idle (J)": _judged(_plain(row, "energy_fit_net_j"), row, "fit"),
        "steady-state energy (J)": _judged(_plain(row, "energy_train_j"), row, "train"),
        "steady-state J per 1k samples": _judged(_plain(row, "j_per_1k_samples"), row, "train"),
        "sampling J per 1k images": _judged(_plain(row, "j_per_1k_images"), row, "generate"),
        "CO2 (g)": _plain(row, "gco2", 3),
        "training time (s)": _plain(row, "duration_fit_s", 3),
        "GFLOP per step": _plain(row, "flops_per_step", 4, 1e-9),
        "energy source": _provenance(row),
    } for _, row in summary.iterrows()])


def quality_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The quality of each configuration: a model's own quality metric in a column of its name
    (where it is not KID; KID always), then greenbench's scores."""
    init_args = _init_args(summary)
    others = tables.metric_columns(summary)
    target = "quality" if others else "KID"
    table = pd.DataFrame([{
        "configuration": row["label"],
        **init_args(row),
        **{metric: _mean(row, column, 3) if f"{column}_mean" in row else "-"
           for metric, column in others.items()},
        "KID": _mean(row, "kid", 3),
        "training energy (J)": _judged(_mean(row, tables.TRAINING_ENERGY), row, "fit"),
        "sampling J per 1k images": _judged(_plain(row, "j_per_1k_images"), row, "generate"),
        "FID": _plain(row, "fid", 3),
        "sample precision": _plain(row, "sample_precision", 3),
        "sample recall": _plain(row, "sample_recall", 3),
        "memorisation": _plain(row, "memorisation", 3),
        "NLL (nats)": _plain(row, "nll_nats"),
        "best KID": _plain(row, "best_kid", 3),
        f"training energy to target {target} (J)": _plain(row, "energy_to_quality_j"),
        "reached the target": _reached(row),
        "Pareto": {True: "yes", False: "no"}.get(row["pareto"], "-"),
    } for _, row in summary.iterrows()])
    if (table["reached the target"] == "-").all():  # no run had a target
        table = table.drop(columns=["reached the target"])
    if others:  # a sweep of modules that cannot sample: no column of scores nobody has
        table = table.drop(columns=[c for c in FEATURE_SPACE_COLUMNS if (table[c] == "-").all()])
    if "stopped_early" in summary and summary["stopped_early"].astype(bool).any():
        # who ended runs before their budget (train.stopped_by), where some did
        table.insert(1 + len(init_args(summary.iloc[0])), "stopped before its budget",
                     [text or "-" for text in summary["stopped_early"]])
    return table


# Scores of samples: empty for every run of a sweep whose modules cannot sample.
FEATURE_SPACE_COLUMNS = ("KID", "sampling J per 1k images", "FID", "sample precision",
                         "sample recall", "memorisation", "NLL (nats)", "best KID")


def savings_table(savings: pd.DataFrame) -> pd.DataFrame:
    def ratio(row: pd.Series, metric: str) -> str:
        value = row[f"{metric}_ratio"]
        if not math.isfinite(value):
            return "-"
        low, high = row[f"{metric}_ratio_low"], row[f"{metric}_ratio_high"]
        interval = f" ({low:.3g} to {high:.3g})" if math.isfinite(low) else ""
        return f"{value:.3g}{interval}"

    others = tables.metric_columns(savings)
    return pd.DataFrame([{
        "configuration": row["label"],
        "baseline": row["baseline"] if isinstance(row["baseline"], str) else "no baseline run",
        "training energy ratio": ratio(row, tables.TRAINING_ENERGY),
        "KID ratio": ratio(row, "kid"),
        **{f"{metric} ratio": ratio(row, column) if f"{column}_ratio" in row else "-"
           for metric, column in others.items()},
    } for _, row in savings.iterrows()])


def _predicted(row: pd.Series) -> dict[str, str]:
    """What ``greenbench plan`` predicted for the configuration, and its error against the
    measured mean (``at most`` where the prediction is an upper bound); nothing without a
    plan."""
    if "prediction_error" not in row:
        return {}
    error = row.get("prediction_error", math.nan)
    bound = "at most " if row.get("prediction_upper_bound") is True else ""
    return {"predicted (J)": f"{bound}{_plain(row, 'predicted_fit_j')}"
            if math.isfinite(row["predicted_fit_j_mean"]) else "-",
            "prediction error": f"{error:+.1%}" if math.isfinite(error) else "-"}


def _reached(row: pd.Series) -> str:
    """``2 of 3`` runs reached the quality target; ``-`` where no run had one."""
    with_target = row.get("n_with_target", 0)
    return f"{int(row['n_target_reached'])} of {int(with_target)}" if with_target else "-"


def _provenance(row: pd.Series) -> str:
    if not row["n"]:
        return "-"
    text = ("measured: " if row["measured"] else "estimated: ") + row["sources"]
    if row["node_concurrency"] > 1:
        text += f"; cpu and ram shared by up to {row['node_concurrency']} points"
    if row.get("gpu_shared", False):
        text += "; gpu not the runs' alone (shared_device)"
    return text


def _generated() -> str:
    sha = environment.git_revision()[0]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when}, greenbench {__version__}" + (f", commit {sha[:12]}" if sha else "")
