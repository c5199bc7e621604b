"""Building a report: records in, files out.

``build(folders, out_dir, baseline)`` reads the records of one or more sweep folders (through
``greenbench.results``, the loader ``check`` shares), summarises them (``tables``), draws the
plots (``plots``) and writes ``report.md``, ``report.html``, ``results.csv``,
``results.parquet`` and the plot files into ``out_dir``. It never runs a model.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from greenbench import __version__, environment, results
from greenbench.files import atomic_write
from greenbench.records import NOT_OK, OK
from greenbench.report import plots, tables
from greenbench.report.render import ReportContent, html, markdown
from greenbench.store import SweepStore


def build(
    folders: list[Path], out_dir: Path, baseline: dict[str, Any] | None = None
) -> list[Path]:
    """Write the report of ``folders`` into ``out_dir``; returns the files written."""
    records = results.read_records(folders)
    frame = results.frame(records)
    summary = tables.summarise(frame)
    savings = tables.savings(summary, baseline)
    out_dir.mkdir(parents=True, exist_ok=True)

    labels = _run_labels(summary)
    ok = frame[frame["status"] == OK].assign(label=frame["run_id"].map(labels))
    figures = [
        ("KID against training energy; the line joins the Pareto-optimal configurations",
         plots.kid_vs_energy(summary, out_dir)),
        ("Energy by window and component, mean over runs", plots.energy_breakdown(ok, out_dir)),
        ("KID against cumulative training energy along training",
         plots.kid_curves(results.load_curves(records), labels, out_dir,
                          estimated=not summary.loc[summary["n"] > 0, "measured"].all())),
    ]
    content = ReportContent(
        title=f"greenbench report: {', '.join(_names(folders))}",
        sweeps=[SweepStore(folder).description() for folder in folders],
        status_counts=frame["status"].value_counts().to_dict(),
        tables=[
            ("Energy and cost", _ENERGY_NOTE, energy_table(summary)),
            ("Quality", _QUALITY_NOTE, quality_table(summary)),
            ("Savings against the baseline", _savings_note(baseline),
             savings_table(savings)),
        ],
        notes=notes(frame, summary),
        plots=[(caption, path) for caption, path in figures if path is not None],
        generated=_generated(),
    )
    written = []
    for name, text in (("report.md", markdown(content, out_dir)), ("report.html", html(content))):
        atomic_write(out_dir / name, text.encode("utf-8"))
        written.append(out_dir / name)
    atomic_write(out_dir / "results.csv", frame.to_csv(index=False).encode("utf-8"))
    atomic_write(out_dir / "results.parquet", frame.to_parquet(index=False))
    written += [out_dir / "results.csv", out_dir / "results.parquet"]
    for _, png in content.plots:
        written += [png, png.with_suffix(".svg")]
    return written


def default_out_dir(folders: list[Path]) -> Path:
    """``reports/<sweep-name>/`` (names joined with ``+`` for several sweeps)."""
    return Path("reports") / "+".join(_names(folders))


def _names(folders: list[Path]) -> list[str]:
    return [SweepStore(folder).description()[0] for folder in folders]


def _run_labels(summary: pd.DataFrame) -> dict[str, str]:
    """run_id -> the label of its configuration."""
    return {
        run_id: label
        for label, run_ids in zip(summary["label"], summary["run_ids"], strict=True)
        for run_id in run_ids
    }


_ENERGY_NOTE = (
    "Means over seeds and repeats of ok runs, with 95 % Student-t intervals (a configuration "
    "with one run has none). Training energy is the train window, after warm-up; net is "
    "minus idle power over the same time; CO2 is of the whole run (warm-up, train, eval)."
)
_QUALITY_NOTE = (
    "Scores at the end of training, in the pinned feature extractor's space (lower KID, FID and "
    "memorisation are better; higher precision and recall). Pareto: no other configuration of "
    "the same model and dataset has both lower training energy and lower KID."
)


def _savings_note(baseline: dict[str, Any] | None) -> str:
    chosen = baseline or tables.DEFAULT_BASELINE
    described = ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
                          for key, value in chosen.items())
    return (f"Ratios to the baseline of the same model ({described}); below 1 is less energy "
            "or better KID. Intervals need at least two runs on each side.")


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


def _runs(row: pd.Series) -> str:
    parts = [str(row["n"])] + [f"{row[f'n_{s}']} {s}" for s in NOT_OK if row[f"n_{s}"]]
    return ", ".join(parts)


def energy_table(summary: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "configuration": row["label"],
        "ok runs": _runs(row),
        "training energy (J)": _mean(row, "energy_train_j"),
        "net of idle (J)": _plain(row, "energy_train_net_j"),
        "J per 1k samples": _plain(row, "j_per_1k_samples"),
        "CO2 (g)": _plain(row, "gco2", 3),
        "training time (s)": _plain(row, "duration_train_s", 3),
        "GFLOP per step": _plain(row, "flops_per_step", 4, 1e-9),
        "energy source": _provenance(row),
    } for _, row in summary.iterrows()])


def quality_table(summary: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "configuration": row["label"],
        "KID": _mean(row, "kid", 3),
        "FID": _plain(row, "fid", 3),
        "sample precision": _plain(row, "sample_precision", 3),
        "sample recall": _plain(row, "sample_recall", 3),
        "memorisation": _plain(row, "memorisation", 3),
        "NLL (nats)": _plain(row, "nll_nats"),
        "best KID": _plain(row, "best_kid", 3),
        "energy to target KID (J)": _plain(row, "energy_to_quality_j"),
        "Pareto": {True: "yes", False: "no"}.get(row["pareto"], "-"),
    } for _, row in summary.iterrows()])


def savings_table(savings: pd.DataFrame) -> pd.DataFrame:
    def ratio(row: pd.Series, metric: str) -> str:
        value = row[f"{metric}_ratio"]
        if not math.isfinite(value):
            return "-"
        low, high = row[f"{metric}_ratio_low"], row[f"{metric}_ratio_high"]
        interval = f" ({low:.3g} to {high:.3g})" if math.isfinite(low) else ""
        return f"{value:.3g}{interval}"

    return pd.DataFrame([{
        "configuration": row["label"],
        "baseline": row["baseline"] if isinstance(row["baseline"], str) else "no baseline run",
        "training energy ratio": ratio(row, "energy_train_j"),
        "KID ratio": ratio(row, "kid"),
    } for _, row in savings.iterrows()])


def _provenance(row: pd.Series) -> str:
    if not row["n"]:
        return "-"
    text = ("measured: " if row["measured"] else "estimated: ") + row["sources"]
    if row["node_concurrency"] > 1:
        text += f"; cpu and ram shared by up to {row['node_concurrency']} points"
    return text


def notes(frame: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """Provenance and caveats, one line each."""
    lines = []
    estimated = summary[(summary["n"] > 0) & ~summary["measured"].astype(bool)]
    if len(estimated):
        lines.append(
            f"Energy is ESTIMATED, not measured by hardware, for {len(estimated)} of "
            f"{int((summary['n'] > 0).sum())} configurations (sources in the energy table)."
        )
    shared = summary[(summary["n"] > 0) & (summary["node_concurrency"] > 1)]
    if len(shared):
        lines.append(
            f"CPU and RAM energy of {len(shared)} of {int((summary['n'] > 0).sum())} "
            f"configurations was drawn on a node shared with other points (up to "
            f"{int(shared['node_concurrency'].max())} at once): it is the node's, not one "
            "run's, and not comparable with runs that had a node to themselves. GPU energy is "
            "per device. Set executor.exclusive_node: true in the sweep to attribute it."
        )
    not_ok = frame[frame["status"] != OK]
    for status, runs in not_ok.groupby("status"):
        reasons = "; ".join(sorted({str(r) for r in runs["reason"].dropna()}))
        lines.append(f"{len(runs)} run(s) {status}, not averaged in: {reasons}")
    if "extractor_id" in tables.group_keys(frame):
        lines.append("Runs used different feature extractors: quality is split by extractor "
                     "(see the configuration names); scores from different extractors are not "
                     "comparable.")
    for source in sorted({str(s) for s in frame["intensity_source"].dropna()}):
        intensities = frame.loc[frame["intensity_source"] == source, "intensity_g_per_kwh"]
        lines.append(f"Carbon intensity {intensities.iloc[0]:g} g/kWh: {source}.")
    return lines


def _generated() -> str:
    sha = environment.git_revision()[0]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when}, greenbench {__version__}" + (f", commit {sha[:12]}" if sha else "")
