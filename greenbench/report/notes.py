"""The report's Notes: provenance and caveats a reader needs before trusting a number.

Estimates, shared nodes, runs that did not end ok, the quality metric of a model whose quality
is not KID, mixed extractors, the carbon intensity, values repaired on reading, runs that never
left warm-up, figures from unreliable windows, machines whose meters cannot tell training from
idle, and every record warning, grouped and counted. One line each; no numbers are computed
here that the tables do not show.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd

from greenbench.records import OK
from greenbench.report import tables
from greenbench.results import quality_columns
from greenbench.results.quality import direction, higher_is_better

IDLE_INDISTINGUISHABLE = "cannot tell training from idle"
_MIN_PERIODS = "energy.min_window_periods (default 10)"
_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)*|\.\d+)(?:[eE][-+]?\d+)?")


def notes(frame: pd.DataFrame, summary: pd.DataFrame, problems: Iterable[str] = ()) -> list[str]:
    """Provenance and caveats, one line each: estimates, shared nodes, runs not ok, extractors,
    carbon intensity, values repaired on reading (``problems``), runs that never left warm-up,
    machines whose meters cannot tell training from idle, and every record warning, grouped."""
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
    on_shared_gpus = summary[(summary["n"] > 0) & summary["gpu_shared"].astype(bool)] \
        if "gpu_shared" in summary else summary.iloc[0:0]
    if len(on_shared_gpus):
        lines.append(
            f"GPU energy of {len(on_shared_gpus)} of {int((summary['n'] > 0).sum())} "
            "configurations was drawn by a GPU not theirs alone (a MIG instance, MIG mode, or "
            "other processes on it; scope shared_device, the reasons in the records' warnings): "
            "it is the whole GPU's, not comparable with runs that had their GPUs to themselves.")
    not_ok = frame[frame["status"] != OK]
    for status, runs in not_ok.groupby("status"):
        reasons = "; ".join(sorted({str(r) for r in runs["reason"].dropna()}))
        lines.append(f"{len(runs)} run(s) {status}, not averaged in: {reasons}")
    lines += _quality_metrics(summary)
    lines += _targets(summary)
    lines += _predictions(summary)
    if "extractor_id" in tables.group_keys(frame):
        lines.append("Runs used different feature extractors: quality is split by extractor "
                     "(see the configuration names); scores from different extractors are not "
                     "comparable.")
    for source in sorted({str(s) for s in frame["intensity_source"].dropna()}):
        intensities = frame.loc[frame["intensity_source"] == source, "intensity_g_per_kwh"]
        lines.append(f"Carbon intensity {intensities.iloc[0]:g} g/kWh: {source}.")
    lines += [f"Record field {problem}" for problem in problems]
    labels = tables.run_labels(summary)
    lines += _warmup_only(frame, labels)
    lines += _unreliable(frame, summary)
    lines += _idle_like(frame, summary, labels)
    lines += _record_warnings(frame)
    return lines


def _predictions(summary: pd.DataFrame) -> list[str]:
    """How far ``greenbench plan``'s predictions of training energy were from what was
    measured: the median absolute error and the worst, over configurations whose prediction
    is not an upper bound."""
    if "prediction_error" not in summary:
        return []
    predicted = summary[summary["prediction_error"].notna()]
    bounds = predicted[predicted["prediction_upper_bound"].astype(bool)]
    judged = predicted[~predicted["prediction_upper_bound"].astype(bool)]
    lines = []
    if len(judged):
        errors = judged["prediction_error"].abs()
        worst = judged.loc[errors.idxmax()]
        lines.append(
            f"Predicted training energy (plan.json) against measured: median absolute error "
            f"{errors.median():.1%} over {len(judged)} configurations; the worst "
            f"{worst['prediction_error']:+.1%} ({worst['label']}). An error is predicted over "
            "measured, minus 1.")
    if len(bounds):
        lines.append(
            f"{len(bounds)} configurations' predictions are upper bounds (their runs may stop "
            "before their budget: stop_at_target or a callback such as EarlyStopping) and are "
            "not in the median.")
    return lines


def _targets(summary: pd.DataFrame) -> list[str]:
    """Per quality target: how many configurations reached it, and the one that needed the
    least training energy to reach it (its mean over the runs that did)."""
    lines = []
    for _, best in tables.least_energy_to_target(summary).iterrows():
        metric, target = best.get("quality_metric", "kid"), best.get("quality_target")
        same = summary[(summary.get("quality_metric") == metric)
                       & (summary.get("quality_target") == target)]
        some = int((same["n_target_reached"] > 0).sum())
        lines.append(
            f"Target {metric} {tables.config_text(target)}: reached by runs of {some} of "
            f"{len(same)} configurations; the least training energy to it: {best['label']}, "
            f"{best['energy_to_quality_j_mean']:.4g} J ({int(best['n_target_reached'])} of "
            f"{int(best['n_with_target'])} runs reached it).")
    return lines


def _quality_metrics(summary: pd.DataFrame) -> list[str]:
    """Per model and dataset whose quality is not KID: its metric, which way is better, and
    what in the report uses it."""
    if "quality_metric" not in summary:
        return []
    others = summary[summary["quality_metric"].map(str) != tables.PARETO_QUALITY]
    lines = []
    for (model, dataset, metric, mode), group in others.groupby(
            ["model", "dataset", "quality_metric", "quality_mode"], dropna=False, sort=True):
        column = tables.metric_columns(group).get(str(metric), quality_columns(str(metric))[0])
        where = f"the quality table's {metric} column" + (
            f" (results column {column})" if column != metric else "")
        if higher_is_better(metric, mode) is None:
            lines.append(f"{model} on {dataset}: quality is {metric}, whose direction the records "
                         f"do not give (no quality mode, max or min), so {where} is not ranked: "
                         "no Pareto marks.")
            continue
        lines.append(f"{model} on {dataset}: quality is {metric} ({direction(metric, mode)}; "
                     f"mode {mode}), not KID: {where}, and what its Pareto marks, its "
                     f"{metric} ratio to the baseline and its panels of the plots show.")
    return lines


def _unreliable(frame: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """What a `` *`` in the tables means, per window, with a reason the records give."""
    lines = []
    ok = frame[frame["status"] == OK]
    for window in tables.JUDGED_WINDOWS:
        counts = f"n_unreliable_{window}"
        marked = summary[summary[counts] > 0] if counts in summary else summary.iloc[0:0]
        if marked.empty:
            continue
        runs = ok[tables.unreliable(ok, window)]
        reasons = sorted({str(r) for r in runs[f"reliability_{window}"].dropna()})
        example = f"; e.g. {reasons[0]}" if reasons else ""
        lines.append(
            f"Figures marked *: the {window} window of {_plural(len(runs), 'run')} in "
            f"{_plural(len(marked), 'configuration')} is not a reliable measurement: shorter "
            f"than {_MIN_PERIODS} periods of its slowest meter, or with a meter fault{example}.")
    return lines


def _warmup_only(frame: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """One line naming the configurations and runs whose whole training was warm-up."""
    if "warmup_only" not in frame:
        return []
    runs = frame[(frame["status"] == OK) & frame["warmup_only"].eq(True)]
    if runs.empty:
        return []
    by_label: dict[str, list[str]] = {}
    for run_id in runs["run_id"]:
        by_label.setdefault(labels.get(run_id, run_id), []).append(str(run_id))
    named = "; ".join(f"{label}: {_counted(sorted(ids))}"
                      for label, ids in sorted(by_label.items()))
    their, have = ("its", "has") if len(runs) == 1 else ("their", "have")
    return [f"{_plural(len(runs), 'run')} never left warm-up: {their} whole training was "
            f"warm-up ({named}), so {'it' if len(runs) == 1 else 'they'} {have} no steady-state "
            f"energy or J per 1k samples, and {their} training energy is all warm-up. Train for "
            "more steps than the sweep's energy.warmup_steps to measure a steady state."]


def _idle_like(frame: pd.DataFrame, summary: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """Per configuration, in plain words, when the meters could not tell training from idle."""
    if "energy_warnings" not in frame:
        return []
    warned = frame[frame["energy_warnings"].map(
        lambda text: isinstance(text, str) and IDLE_INDISTINGUISHABLE in text)]
    counts: dict[str, int] = {}
    for run_id in warned["run_id"]:
        counts[labels.get(run_id, run_id)] = counts.get(labels.get(run_id, run_id), 0) + 1
    sizes = dict(zip(summary["label"], summary["run_ids"].map(len), strict=True))
    return [f"{label}: on this machine the meters could not tell training from idle "
            f"({count} of {_plural(sizes.get(label, count), 'run')}), so energy here is "
            "proportional to time: its energy figures measure how long training took, not "
            "how hard the hardware worked, and compare with other configurations only as "
            "their durations do." for label, count in sorted(counts.items())]


def _record_warnings(frame: pd.DataFrame) -> list[str]:
    """Every record warning, grouped (the same text, or the same but for its numbers) and
    counted by runs."""
    if "energy_warnings" not in frame:
        return []
    groups: dict[str, tuple[list[str], set[str]]] = {}  # text without numbers -> texts, runs
    for run_id, text in zip(frame["run_id"], frame["energy_warnings"], strict=True):
        if not isinstance(text, str):
            continue
        for line in text.splitlines():
            texts, runs = groups.setdefault(_NUMBER.sub("#", line), ([], set()))
            if line not in texts:
                texts.append(line)
            runs.add(str(run_id))
    ordered = sorted(groups.values(), key=lambda group: (-len(group[1]), group[0][0]))
    return [f"{_plural(len(runs), 'run')}: {texts[0]}"
            + ("" if len(texts) == 1 else " (the numbers differ from run to run)")
            for texts, runs in ordered]


def _counted(run_ids: list[str]) -> str:
    shown = ", ".join(run_ids[:5]) + (f" and {len(run_ids) - 5} more" if len(run_ids) > 5 else "")
    return f"{_plural(len(run_ids), 'run')} ({shown})"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
