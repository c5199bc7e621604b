"""The numbers of a report: configurations summarised over runs, Pareto marks, savings.

``summarise`` groups the ok runs of the results table by configuration (every config axis but
``seed`` and ``repeat``: those are what the runs of one configuration vary over) and gives, for
each metric, the mean, the standard deviation and the half-width of a 95 % Student-t
confidence interval (NaN with a single run: one run has no interval, and none is invented). Runs
that did not end ok are counted by status, never averaged in. ``savings`` compares each
configuration with the baseline configuration of the same model, as ratios with intervals.

Training energy is ``energy_fit_j``: everything fit spent training, warm-up plus train. The
Pareto marks and the savings use it; the train window alone (``energy_train_j``,
``j_per_1k_samples``) is the steady state, empty for a run that never left warm-up.

Quality is KID, or the metric a configuration's runs name (``quality_metric``, a user's
LightningModule's ``val_acc``), in its direction (``quality_mode``); each summary row says
which (``quality_metric``, ``quality_mode``, ``quality_column``), the Pareto marks of a model
use it, and the savings compare it beside KID. A user's class's init args are configuration
keys (``results.group_keys``); a label names those that vary between its configurations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from greenbench.records import CONFIGURATION_FIELDS, DEFAULT_QUALITY, INIT_ARGS_KEYS, NOT_OK, OK
from greenbench.results import argument_columns, configuration_columns, group_keys, quality_columns
from greenbench.results.loader import QUALITY_METRIC_COLUMNS  # what quality is, per configuration
from greenbench.results.quality import higher_is_better
from greenbench.results.stats import confidence_half_width, ratio_interval

LABEL_KEYS = ("model", "precision", "width", "data_fraction")  # always in a label
TRAINING_ENERGY = "energy_fit_j"  # warm-up plus train: what training cost
METRICS = (
    "energy_fit_j", "energy_fit_net_j", "duration_fit_s",
    "energy_train_j", "energy_train_net_j", "energy_eval_j", "energy_total_j",
    "j_per_1k_samples", "kwh", "gco2", "duration_train_s", "flops_per_step", "kid", "fid",
    "sample_precision", "sample_recall", "density", "coverage", "memorisation", "nll_nats",
    "nll_bits_per_dim", "best_kid", "energy_to_quality_j", "j_per_1k_images", "images_per_s",
    "predicted_fit_j",
)
# The windows whose figures the tables show, each marked where some run's window is unreliable.
JUDGED_WINDOWS = ("fit", "train", "generate")
DEFAULT_BASELINE = {"precision": "32-true", "width": 1.0, "data_fraction": 1.0}
PARETO_QUALITY = DEFAULT_QUALITY["metric"]  # the quality axis where a configuration names none


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration; see the module docstring."""
    keys = group_keys(results)
    metrics = [*METRICS, *(column for column in quality_metric_columns(results)
                           if column not in METRICS)]
    rows = []
    for values, runs in results.groupby(keys, dropna=False, sort=True):
        ok = runs[runs["status"] == OK]
        row: dict[str, Any] = dict(zip(keys, values, strict=True))
        row["run_ids"] = list(runs["run_id"])
        row["n"] = len(ok)
        for status in NOT_OK:
            row[f"n_{status}"] = int((runs["status"] == status).sum())
        row["reasons"] = "; ".join(sorted({str(r) for r in runs["reason"].dropna()}))
        for metric in metrics:
            row.update(_statistics(metric, ok[metric] if metric in ok else pd.Series()))
        row.update(_quality_of(ok if len(ok) else runs))
        row["measured"] = bool(len(ok)) and bool(ok["energy_measured"].fillna(False).all())
        row["sources"] = _sources(ok)
        row["node_concurrency"] = most_sharing(ok)
        row["gpu_shared"] = bool(ok["gpu_shared"].eq(True).any()) if "gpu_shared" in ok else False
        row["n_warmup_only"] = int(ok["warmup_only"].eq(True).sum()) if "warmup_only" in ok else 0
        row["stopped_early"] = stopped_early(ok)
        if "predicted_fit_j" in runs:  # a plan's prediction, against the measured mean
            row["prediction_upper_bound"] = bool(runs["prediction_upper_bound"].eq(True).any())
            row["prediction_error"] = row["predicted_fit_j_mean"] / \
                row[f"{TRAINING_ENERGY}_mean"] - 1 if row[f"{TRAINING_ENERGY}_mean"] > 0 \
                else math.nan
        reached = ok["target_reached"] if "target_reached" in ok else pd.Series(dtype=object)
        row["n_with_target"] = int(reached.notna().sum())  # ok runs that had a target
        row["n_target_reached"] = int(reached.eq(True).sum())
        for window in JUDGED_WINDOWS:
            row[f"n_unreliable_{window}"] = int(unreliable(ok, window).sum())
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary["label"] = _labels(summary, keys)
    summary["pareto"] = pareto(summary)
    return summary


def stopped_early(runs: pd.DataFrame) -> str:
    """Who ended the runs that stopped before their budget, and how many of them: ``2 of 3:
    EarlyStopping (epochs 4, 6)``; empty when every run trained its budget."""
    if "stopped_by" not in runs:
        return ""
    by = runs["stopped_by"].astype(object)
    early = runs[by.notna() & ~by.isin(["budget", "diverged"])]
    if early.empty:
        return ""
    parts = []
    for who, stopped in early.groupby("stopped_by", sort=True):
        epochs = sorted(int(e) for e in stopped.get("stopped_at_epoch", pd.Series()).dropna())
        at = f" (epoch{'s' if len(epochs) > 1 else ''} {', '.join(map(str, epochs))})" \
            if epochs else ""
        parts.append(f"{who}{at}")
    return f"{len(early)} of {len(runs)}: {'; '.join(parts)}"


def least_energy_to_target(summary: pd.DataFrame) -> pd.DataFrame:
    """Per quality metric and target, the configuration with the least mean training energy to
    the target among those some of whose runs reached it (``energy_to_quality_j`` is the mean
    over the runs that reached it)."""
    if "n_target_reached" not in summary or "energy_to_quality_j_mean" not in summary:
        return summary.iloc[0:0]
    reached = summary[(summary["n_target_reached"] > 0)
                      & summary["energy_to_quality_j_mean"].notna()]
    if reached.empty:
        return reached
    keys = [key for key in ("quality_metric", "quality_target") if key in reached]
    best = reached.sort_values("energy_to_quality_j_mean", kind="stable")
    return best.groupby(keys, dropna=False, sort=True).head(1)


def unreliable(runs: pd.DataFrame, window: str) -> pd.Series:
    """Which of ``runs`` have a figure for ``window`` that is not a reliable measurement (a
    window never entered, such as ``generate`` of a module that cannot sample, has no figure
    to mark)."""
    column, energy = f"reliable_{window}", f"energy_{window}_j"
    if column not in runs:
        return pd.Series(False, index=runs.index)
    judged = runs[column].astype("boolean").eq(False).fillna(False)
    return judged & runs[energy].notna() if energy in runs else judged


def quality_metric_columns(results: pd.DataFrame) -> list[str]:
    """The final and best columns of every quality metric ``results``' runs name, KID's
    included (``kid``, ``best_kid``, ``val_acc``, ``best_val_acc``, ...)."""
    own = results["quality_column"].dropna() if "quality_column" in results else []
    return [column for final in dict.fromkeys([quality_columns(PARETO_QUALITY)[0],
                                               *map(str, own)])
            for column in (final, f"best_{final}")]


def _quality_of(runs: pd.DataFrame) -> dict[str, Any]:
    """What quality is for a configuration's runs: its metric, mode and column (KID, lower is
    better, for runs that name none)."""
    metric = _first(runs, "quality_metric", None)
    mode = DEFAULT_QUALITY["mode"] if metric is None else _first(runs, "quality_mode", None)
    metric = PARETO_QUALITY if metric is None else str(metric)
    return {"quality_metric": metric, "quality_mode": mode,
            "quality_target": _first(runs, "quality_target", math.nan),
            "quality_column": _first(runs, "quality_column", None) or quality_columns(metric)[0]}


def metric_columns(summary: pd.DataFrame) -> dict[str, str]:
    """The results column of each quality metric of ``summary`` other than KID (a module's own
    ``recall`` is ``quality_recall``... or its own name, apart from greenbench's)."""
    if "quality_column" not in summary:
        return {metric: quality_columns(metric)[0] for metric in other_metrics(summary)}
    pairs = zip(summary["quality_metric"].map(str), summary["quality_column"], strict=True)
    return {metric: str(column) for metric, column in pairs if metric != PARETO_QUALITY}


def other_metrics(summary: pd.DataFrame) -> list[str]:
    """The quality metrics of ``summary``'s configurations other than KID, in order."""
    if "quality_metric" not in summary:
        return []
    return [metric for metric in dict.fromkeys(map(str, summary["quality_metric"].dropna()))
            if metric != PARETO_QUALITY]


def run_labels(summary: pd.DataFrame) -> dict[str, str]:
    """run_id -> the label of its configuration."""
    return {
        run_id: label
        for label, run_ids in zip(summary["label"], summary["run_ids"], strict=True)
        for run_id in run_ids
    }


def _statistics(metric: str, values: pd.Series) -> dict[str, float]:
    values = pd.to_numeric(values, errors="coerce").dropna()
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    sd = float(values.std(ddof=1)) if n > 1 else math.nan
    ci = confidence_half_width(sd, n)
    return {f"{metric}_mean": mean, f"{metric}_sd": sd, f"{metric}_ci": ci, f"{metric}_n": n}


def most_sharing(runs: pd.DataFrame) -> int:
    """The most points any of these runs shared its node with (itself included); 1 for runs
    that had their node to themselves, or records from before the field existed."""
    if "node_concurrency" not in runs:
        return 1
    most = pd.to_numeric(runs["node_concurrency"], errors="coerce").max()
    return int(most) if pd.notna(most) and most > 1 else 1


def _sources(ok: pd.DataFrame) -> str:
    if ok.empty:
        return ""
    parts = []
    for component in ("gpu", "cpu", "ram"):
        found = sorted({s for s in ok[f"source_{component}"].dropna() if s != "unavailable"})
        if found:
            parts.append(f"{component}: {', '.join(found)}")
    return "; ".join(parts) or "unavailable"


def _labels(summary: pd.DataFrame, keys: list[str]) -> list[str]:
    """Short names: model, precision, width and fraction, plus whatever else varies between
    configurations of the same model (and the dataset when there are several); what belongs
    to a user's class (its init args, ``width_arg``, quality metric) only where it varies
    between configurations of that model."""
    extra = [k for k in keys if k not in LABEL_KEYS and k not in ("model", "dataset")]
    counts = {key: summary.groupby("model", dropna=False)[key].nunique(dropna=False)
              for key in extra}
    varying = {key for key in extra if (counts[key] > 1).any()}
    own = {*argument_columns(extra), *QUALITY_METRIC_COLUMNS, "width_arg"}
    datasets = summary["dataset"].nunique(dropna=False) > 1
    labels = []
    for _, row in summary.iterrows():
        parts = [str(row["model"])] + ([str(row["dataset"])] if datasets else [])
        parts += [str(row["precision"]), f"w={config_text(row['width'])}",
                  f"f={config_text(row['data_fraction'])}"]
        parts += [f"{_short_key(key)}={config_text(row[key])}" for key in extra
                  if key in varying and key != "extractor_id"
                  and (key not in own or counts[key].get(row["model"], 0) > 1)]
        if "extractor_id" in varying:
            parts.append(f"extractor {str(row['extractor_id'])[-8:]}")
        labels.append(" ".join(parts))
    return labels


def _short_key(key: str) -> str:
    """A config field as a label names it: a model's init arg by its name (``lr``), a data
    module's as ``data.<name>``."""
    model, data = (f"{section}.init_args." for section in INIT_ARGS_KEYS)
    if key.startswith(model):
        return key.removeprefix(model)
    return "data." + key.removeprefix(data) if key.startswith(data) else key


def varied_arguments(summary: pd.DataFrame) -> list[str]:
    """The init-arg columns whose value is not the same in every configuration that has one."""
    return [column for column in argument_columns(summary)
            if summary[column].map(config_text).where(summary[column].notna()).nunique() > 1]


def config_text(value: Any) -> str:
    """A config value as labels and tables show it: a number as ``%g``, NaN as ``-``."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:g}"
    return str(value)


def pareto(summary: pd.DataFrame) -> pd.Series:
    """True where no configuration of the same model and dataset (and quality metric) has both
    lower training energy (``TRAINING_ENERGY``) and better quality: the group's
    ``quality_metric`` (KID where it names none) in its direction (``HIGHER_IS_BETTER`` for
    greenbench's own scores, else ``quality_mode``); NaN where either number is missing, or the
    metric has no direction."""
    marks = pd.Series(np.nan, index=summary.index, dtype=object)
    scope = [k for k in ("model", "dataset", "image_size", "extractor_id", *QUALITY_METRIC_COLUMNS)
             if k in summary]
    for _, group in summary.groupby(scope, dropna=False):
        metric = _first(group, "quality_metric", PARETO_QUALITY)
        higher = higher_is_better(metric, _first(group, "quality_mode", None))
        quality = f"{_first(group, 'quality_column', None) or quality_columns(metric)[0]}_mean"
        if higher is None or quality not in group:
            continue
        scored = group.dropna(subset=[f"{TRAINING_ENERGY}_mean", quality])
        energy = scored[f"{TRAINING_ENERGY}_mean"]
        # as a "lower is better" axis, whatever the metric's direction
        kid = -scored[quality] if higher else scored[quality]
        for index in scored.index:
            others = scored.index != index
            dominated = (
                (energy[others] <= energy[index]) & (kid[others] <= kid[index])
                & ((energy[others] < energy[index]) | (kid[others] < kid[index]))
            ).any()
            marks[index] = not dominated
    return marks


def _first(frame: pd.DataFrame, column: str, default: Any) -> Any:
    values = frame[column].dropna() if column in frame else []
    return values.iloc[0] if len(values) else default


def savings(summary: pd.DataFrame, baseline: dict[str, Any] | None = None) -> pd.DataFrame:
    """Each configuration against the baseline of the same model (and everything else the
    baseline does not set): ratios of mean training energy (``TRAINING_ENERGY``), of mean
    KID and of the mean of the configuration's own quality metric where it is not KID
    (``<column>_ratio``), with 95 % intervals where both sides have at least two runs."""
    baseline = DEFAULT_BASELINE if baseline is None else baseline
    keys = [k for k in (*configuration_columns(summary), *QUALITY_METRIC_COLUMNS, "extractor_id")
            if k in summary and k not in baseline]
    rows = []
    for _, row in summary.iterrows():
        match = summary
        for key in keys:
            match = match[_same(match[key], row[key])]
        for key, value in baseline.items():
            match = match[_same(match[key], value)]
        base = match.iloc[0] if len(match) else None
        entry = {"label": row["label"], "baseline": None if base is None else base["label"]}
        column = row.get("quality_column", PARETO_QUALITY)
        for metric in dict.fromkeys((TRAINING_ENERGY, PARETO_QUALITY, column)):
            entry.update(_ratio(metric, row, base))
        entry.update({key: row[key] for key in QUALITY_METRIC_COLUMNS if key in row})
        rows.append(entry)
    return pd.DataFrame(rows)


def _same(column: pd.Series, value: Any) -> pd.Series:
    if isinstance(value, float) and math.isnan(value):
        return column.isna()
    return column == value


def _ratio(metric: str, row: pd.Series, base: pd.Series | None) -> dict[str, float]:
    out = {f"{metric}_ratio": math.nan, f"{metric}_ratio_low": math.nan,
           f"{metric}_ratio_high": math.nan}
    if base is None:
        return out
    a, b = row[f"{metric}_mean"], base[f"{metric}_mean"]
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b <= 0:
        return out
    out[f"{metric}_ratio"] = a / b
    out[f"{metric}_ratio_low"], out[f"{metric}_ratio_high"] = ratio_interval(
        a, row[f"{metric}_sd"], row[f"{metric}_n"], b, base[f"{metric}_sd"], base[f"{metric}_n"])
    return out


def parse_baseline(text: str | None, columns: list[str]) -> dict[str, Any] | None:
    """``precision=32-true,width=1`` into a baseline selection; numbers become floats."""
    if not text:
        return None
    selection: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"{part!r} is not KEY=VALUE")
        if key not in (*CONFIGURATION_FIELDS, *argument_columns(columns)) or key not in columns:
            raise ValueError(
                f"{key!r} is not a configuration key ({', '.join(CONFIGURATION_FIELDS)}, or an "
                "argument of these runs: model.init_args.<name>, data.init_args.<name>, "
                "trainer.<name>)")
        try:
            selection[key] = float(value)
        except ValueError:
            selection[key] = value
    return selection
