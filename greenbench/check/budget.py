"""Energy budgets for CI: the one place that decides pass, fail or inconclusive.

The rules and their validation are ``rules``'. Each rule selects ok runs by config fields and
bounds one results column, absolutely (``max``/``min``) or as a ratio (``max_ratio``/
``min_ratio``) to another selection of the same results (``relative_to``, measured on the same
machine in the same run) or to the same selection in a stored results file (``check
--baseline``). ``tolerance`` widens the bound by a fraction of it; ``statistic`` is the mean, or
the upper or lower end of its 95 % interval.

Like with like: a rule's runs are split by configuration (every config field but seed and
repeat, ``results.group_keys``), and each configuration gets its own verdict, so that runs of
different configurations are never pooled into one sample. A ratio's reference is the
configuration that differs only in what ``relative_to`` names (with ``--baseline``: the same
configuration in the stored results).

A user's class: a rule selects on its init args (``model.init_args.lr``) like on any config
field, and bounds its quality metric (``val_acc``) like any other column; which way is better
is the runs' ``quality_mode``, which the verdict names, and a ratio rule whose bound holds back
only improvement (``max_ratio`` where higher is better) is warned about
(``quality_warnings``).

Noise: an absolute bound compares the statistic with the bound. A ratio beyond its bound fails
only when the difference is also significant (one-sided Welch t-test, p < 0.01); otherwise it is
INCONCLUSIVE. With one run on a side, or no spread at all (FLOPs are exact), no test is possible
and the bound alone decides; the verdict says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from greenbench.check.rules import BOUNDS, SELECTABLE, Rule, load_budgets
from greenbench.energy.meters import GPU
from greenbench.energy.monitor import GENERATE, TOTAL, TRAIN, WINDOWS
from greenbench.errors import UserError
from greenbench.records import DEFAULT_QUALITY, OK
from greenbench.results import group_keys, quality_columns
from greenbench.results.quality import direction, higher_is_better
from greenbench.results.stats import confidence_half_width, welch_p_value

__all__ = ["BOUNDS", "FAIL", "INCONCLUSIVE", "PASS", "SELECTABLE", "Rule", "Verdict",
           "baseline_columns", "evaluate", "load_budgets", "quality_warnings",
           "shared_node_warnings"]

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
SIGNIFICANCE = 0.01
# metrics that include a node's CPU and RAM energy (the GPU's own columns do not)
NODE_ENERGY_METRICS = ("energy_", "j_per_1k_samples", "kwh", "gco2", "idle_power_w")
GPU_ONLY_SUFFIX = f"_{GPU}_j"
CPU_OR_RAM_SUFFIXES = ("_cpu_j", "_ram_j")
# results columns that are figures of one window without naming it
METRIC_WINDOWS = {"j_per_1k_samples": TRAIN, "kwh": TOTAL, "gco2": TOTAL,
                  "j_per_image": GENERATE, "images_per_s": GENERATE}


@dataclass(frozen=True)
class Verdict:
    rule: Rule
    result: str  # PASS, FAIL or INCONCLUSIVE
    value: float  # the statistic (absolute) or the ratio of means (relative)
    bound: float  # the bound, tolerance included
    margin: float  # how far inside the bound, as a fraction of it (negative: outside)
    n: int  # runs selected
    n_reference: int | None  # runs of the reference, for a ratio
    p_value: float | None  # one-sided Welch test, where one was possible
    note: str  # how the result was decided, in words
    # the config fields that tell this verdict's configuration from the rule's others; empty
    # when the rule selects a single configuration
    configuration: dict[str, Any] = field(default_factory=dict)
    # what it was decided on, for the exports: the metric of each selected run (and of each
    # run of the reference, for a ratio), and the selected runs' ids
    values: tuple[float, ...] = ()
    reference: tuple[float, ...] = ()
    run_ids: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The rule's name, plus the configuration when the rule has several:
        ``name [precision=bf16-mixed]``."""
        return _label(self.rule.name, self.configuration)


def _label(name: str, configuration: dict[str, Any]) -> str:
    return f"{name} {describe(configuration, '[]', '=')}" if configuration else name


def evaluate(rules: list[Rule], results: pd.DataFrame,
             baseline: pd.DataFrame | None = None) -> list[Verdict]:
    """Decide every rule, one verdict per configuration it selects; a selection or reference
    that matches no ok run, a missing ``--baseline`` and a reference mean that is not above 0
    are ``UserError``s."""
    ok = results[results["status"] == OK]
    keys = group_keys(ok)
    reference_pool = baseline[baseline["status"] == OK] if baseline is not None else None
    return [verdict for rule in rules for verdict in _decide(rule, ok, keys, reference_pool)]


def baseline_columns(rules: list[Rule], results: pd.DataFrame) -> dict[str, str]:
    """The columns a ``--baseline`` results file must hold for ``rules``, each with the name
    of a rule that needs it: the metric and the config fields of every rule compared with the
    baseline, and every configuration field (a configuration is matched to its own)."""
    needed: dict[str, str] = {}
    for rule in rules:
        if rule.uses_baseline:
            for column in [rule.metric, *rule.select.given(),
                           *group_keys(results[results["status"] == OK])]:
                needed.setdefault(column, rule.name)
    return needed


def _decide(rule: Rule, ok: pd.DataFrame, keys: list[str],
            baseline: pd.DataFrame | None) -> list[Verdict]:
    if rule.uses_baseline and baseline is None:
        raise UserError(f"rule {rule.name!r}: {rule.bound_kind} needs relative_to, or a "
                        "--baseline results file to compare with")
    selection = rule.select.given()
    for where, fields in (("select", selection), ("relative_to", _given(rule.relative_to))):
        for key in fields:
            if key not in ok:
                raise UserError(f"rule {rule.name!r}: {where} names {key!r}, which is not a "
                                "column of these results")
    chosen = _with_metric(ok[_matches(ok, selection)], rule.metric)
    if chosen.empty:
        raise UserError(f"rule {rule.name!r}: select {describe(selection)} matches no ok run "
                        f"with a {rule.metric} value")
    configurations = _configurations(chosen, keys)
    varying = [key for key in keys
               if len({_normal(config[key]) for config, _ in configurations}) > 1]
    verdicts = []
    for config, runs in configurations:
        shown = {key: config[key] for key in varying}
        label = _label(rule.name, shown)
        values = runs[rule.metric]
        reference = pd.Series(dtype=float)
        if not rule.is_ratio:
            value, how = _statistic(values, rule.statistic)
            verdict = _absolute(rule, value, len(values), how)
        elif rule.relative_to is not None:
            relative_to = rule.relative_to.given()
            reference = _reference(label, rule, ok, config, relative_to)
            verdict = _relative(rule, label, values, reference,
                                f"relative_to {describe(relative_to)}")
        else:
            assert baseline is not None
            reference = _with_metric(baseline[_matches(baseline, {**config, **selection})],
                                     rule.metric)[rule.metric]
            if reference.empty:
                raise UserError(f"rule {label!r}: the --baseline results hold no ok run of "
                                f"this configuration with a {rule.metric} value")
            verdict = _relative(rule, label, values, reference,
                                "the same selection in the --baseline results")
        own = _own_quality(rule.metric, runs)
        note = verdict.note + (f"; {direction(*own)} for {own[0]} (quality_mode {own[1]})"
                               if own is not None and own[0] != DEFAULT_QUALITY["metric"] else "")
        verdicts.append(replace(
            verdict, configuration=shown, note=note, values=tuple(map(float, values)),
            reference=tuple(map(float, reference)),
            run_ids=tuple(map(str, runs["run_id"])) if "run_id" in runs else ()))
    return verdicts


def _given(selection: Any) -> dict[str, Any]:
    return {} if selection is None else selection.given()


def _own_quality(column: str, runs: pd.DataFrame) -> tuple[str, Any] | None:
    """The quality metric and mode of ``runs`` whose results column ``column`` is, or None
    when it is none of theirs."""
    if "quality_metric" not in runs:
        return None
    modes = runs["quality_mode"] if "quality_mode" in runs else pd.Series(None, index=runs.index)
    for metric, mode in zip(runs["quality_metric"], modes, strict=True):
        if isinstance(metric, str) and quality_columns(metric)[0] == column:
            return metric, mode
    return None


def quality_warnings(rules: list[Rule], results: pd.DataFrame) -> list[str]:
    """One line per rule on the quality metric of the runs it selects whose bound holds back
    only improvement: a ``max`` or ``max_ratio`` where higher is better (``quality_mode`` max),
    a ``min`` or ``min_ratio`` where lower is; "no worse" is the other bound."""
    ok = results[results["status"] == OK]
    lines = []
    for rule in rules:
        if any(key not in ok for key in rule.select.given()):
            continue
        own = _own_quality(rule.metric, ok[_matches(ok, rule.select.given())])
        higher = None if own is None else higher_is_better(*own)
        if higher is None or (rule.bound_kind in ("max_ratio", "max")) != higher:
            continue
        if not rule.is_ratio:  # an absolute bound on the side where the metric improves
            limit, other = ("ceiling", "min") if rule.bound_kind == "max" else ("floor", "max")
            lines.append(f"rule {rule.name!r}: {rule.bound_kind} puts a {limit} on "
                         f"{rule.metric}, but {direction(*own)} for {own[0]} (quality_mode "
                         f"{own[1]}): the bound runs against the metric's direction and holds "
                         f"back improvement; a limit on getting worse is {other}")
            continue
        other, way = ("min_ratio", "rise above") if higher else ("max_ratio", "fall below")
        lines.append(f"rule {rule.name!r}: {rule.bound_kind} bounds how far {rule.metric} may "
                     f"{way} its reference, but {direction(*own)} for {own[0]} (quality_mode "
                     f"{own[1]}): the rule holds back improvement, not a regression; 'no worse "
                     f"than the reference' is {other}")
    return lines


def _reference(label: str, rule: Rule, ok: pd.DataFrame, config: dict[str, Any],
               relative_to: dict[str, Any]) -> pd.Series:
    """The runs of the configuration that differs from ``config`` only in what
    ``relative_to`` names."""
    candidates = _with_metric(ok[_matches(ok, relative_to)], rule.metric)
    if candidates.empty:
        raise UserError(f"rule {label!r}: relative_to {describe(relative_to)} matches no ok run "
                        f"with a {rule.metric} value")
    same = {key: value for key, value in config.items() if key not in relative_to}
    reference = candidates[_matches(candidates, same)]
    if reference.empty:
        differ = [key for key, value in same.items()
                  if not _matches(candidates, {key: value}).any()]
        fields = ", ".join(f"{key}={_text(same[key])}" for key in differ) or (
            "combination of the other config fields")
        raise UserError(f"rule {label!r}: relative_to {describe(relative_to)} matches ok runs, "
                        f"but none with the same {fields} as the selection; a ratio compares "
                        "configurations that differ only in what relative_to names")
    return reference[rule.metric]


def shared_node_warnings(rules: list[Rule], results: pd.DataFrame) -> list[str]:
    """One line per energy rule whose runs shared a node (their CPU and RAM energy is the
    node's, drawn for every point running there, not each run's own), and one per rule whose
    runs drew GPU energy on a GPU not theirs alone (``shared_device``)."""
    ok = results[results["status"] == OK]
    lines = []
    for rule in rules:
        if not rule.metric.startswith(NODE_ENERGY_METRICS):
            continue
        chosen = _matches(ok, rule.select.given())
        if rule.relative_to is not None:
            chosen |= _matches(ok, rule.relative_to.given())
        runs = ok[chosen]
        absent = pd.Series(None, index=runs.index, dtype=object)  # records from before a field
        shared = pd.to_numeric(runs.get("node_concurrency", absent), errors="coerce") > 1
        if shared.any() and not rule.metric.endswith(GPU_ONLY_SUFFIX):
            lines.append(
                f"rule {rule.name!r}: {int(shared.sum())} of its {len(runs)} runs shared a node "
                f"with other points, so the CPU and RAM part of {rule.metric} is the node's, not "
                "the run's; run energy budgets with executor.exclusive_node: true"
            )
        on_shared_gpus = runs.get("gpu_shared", absent).eq(True)
        if on_shared_gpus.any() and not rule.metric.endswith(CPU_OR_RAM_SUFFIXES):
            lines.append(
                f"rule {rule.name!r}: {int(on_shared_gpus.sum())} of its {len(runs)} runs drew "
                f"GPU energy on a GPU not theirs alone (scope shared_device: a MIG instance or "
                f"other processes), so the GPU part of {rule.metric} is the whole GPU's; run "
                "energy budgets on GPUs of their own"
            )
    return lines


def window_of(metric: str) -> str | None:
    """The energy window a results column is a figure of (``energy_fit_j``: fit), or None."""
    for window in WINDOWS:
        if metric.startswith((f"energy_{window}_", f"duration_{window}_")):
            return window
    return METRIC_WINDOWS.get(metric)


def unreliable_warnings(rules: list[Rule], results: pd.DataFrame) -> list[str]:
    """One line per rule whose runs have an unreliable window for the metric it bounds: too
    short for the slowest meter, or with a meter fault (``reliable_<window>`` is False)."""
    ok = results[results["status"] == OK]
    lines = []
    for rule in rules:
        window = window_of(rule.metric)
        column = f"reliable_{window}"
        if window is None or column not in ok:
            continue
        chosen = _matches(ok, rule.select.given())
        if rule.relative_to is not None:
            chosen |= _matches(ok, rule.relative_to.given())
        runs = ok[chosen]
        unreliable = runs[column].astype("boolean").eq(False).fillna(False)
        if unreliable.any():
            why = runs.loc[unreliable, f"reliability_{window}"].dropna().astype(str)
            example = f" (e.g. {why.iloc[0]})" if len(why) else ""
            lines.append(f"rule {rule.name!r}: {int(unreliable.sum())} of its {len(runs)} runs "
                         f"have an unreliable {window} window{example}, so {rule.metric} there "
                         "is not a measurement to hold a budget to")
    return lines


# --------------------------------------------------------------------------- matching runs


def _matches(frame: pd.DataFrame, wanted: dict[str, Any]) -> pd.Series:
    """Rows whose every named field has the wanted value: numbers as numbers (1 matches 1.0),
    text as text, None only an empty cell. A number never matches text, nor text a number."""
    mask = pd.Series(True, index=frame.index)
    for key, value in wanted.items():
        if key not in frame:
            raise UserError(f"the results have no {key!r} column to select on")
        column = frame[key]
        if _normal(value) is None:
            mask &= column.isna()
        elif isinstance(value, (bool, np.bool_)):  # an init arg's flag; as text in a CSV file
            mask &= column.map(lambda cell, value=value: (
                bool(cell) == value if isinstance(cell, (bool, np.bool_)) else
                isinstance(cell, str) and cell.strip().lower() == str(value).lower())
            ).astype(bool)
        elif _numeric(value):
            plain = (pd.api.types.is_numeric_dtype(column)
                     and not pd.api.types.is_bool_dtype(column))
            numbers = column if plain else pd.Series(
                [cell if _numeric(cell) else np.nan for cell in column], index=column.index,
                dtype=float)
            mask &= np.isclose(numbers.to_numpy(dtype=float, na_value=np.nan), float(value),
                               rtol=1e-9, atol=0.0)
        else:
            mask &= column.map(lambda cell, value=value: isinstance(cell, str) and cell == value
                               ).astype(bool)
    return mask


def _with_metric(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows with a numeric value of ``metric``, that column as numbers."""
    values = pd.to_numeric(frame[metric], errors="coerce")
    return frame.assign(**{metric: values})[values.notna()]


def _configurations(frame: pd.DataFrame,
                    keys: list[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """The runs of ``frame`` by configuration (their values of ``keys``), in a stable order."""
    groups: dict[tuple, list[Any]] = {}
    columns = [frame[key].tolist() for key in keys]
    for position, index in enumerate(frame.index):
        config = tuple(_normal(column[position]) for column in columns)
        groups.setdefault(config, []).append(index)
    ordered = sorted(groups, key=lambda config: tuple(map(_order, config)))
    return [(dict(zip(keys, config, strict=True)), frame.loc[groups[config]])
            for config in ordered]


def _normal(value: Any) -> Any:
    """A cell as a comparable value: None for an empty cell, numbers as floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if _numeric(value):
        number = float(value)
        return None if math.isnan(number) else number
    return value


def _order(value: Any) -> tuple[int, Any]:
    if value is None:
        return (2, "")
    return (0, value) if isinstance(value, float) else (1, str(value))


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _text(value: Any) -> str:
    value = _normal(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(fields: dict[str, Any], brackets: str = "{}", separator: str = ": ") -> str:
    """``{model: gan, width: 0.5}``; or, with ``'[]', '='``, ``[model=gan, width=0.5]``."""
    inner = ", ".join(f"{key}{separator}{_text(value)}" for key, value in fields.items())
    return f"{brackets[0]}{inner}{brackets[1]}"


# --------------------------------------------------------------------------- deciding


def _statistic(values: pd.Series, statistic: str) -> tuple[float, str]:
    mean = float(values.mean())
    if statistic == "mean":
        return mean, f"mean of {len(values)} run(s)"
    if len(values) < 2:
        return mean, "one run, so no interval: its value decides"
    half = confidence_half_width(float(values.std(ddof=1)), len(values))
    upper = statistic == "upper_ci"
    return (mean + half if upper else mean - half,
            f"{'upper' if upper else 'lower'} end of the 95 % interval over {len(values)} runs")


def _absolute(rule: Rule, value: float, n: int, how: str) -> Verdict:
    bound = rule.effective_bound
    inside = value <= bound if rule.bound_kind == "max" else value >= bound
    return Verdict(rule, PASS if inside else FAIL, value, bound, _margin(rule, value, bound),
                   n, None, None, f"{how}, against the bound")


def _relative(rule: Rule, label: str, values: pd.Series, reference: pd.Series,
              where: str) -> Verdict:
    reference_mean = float(reference.mean())
    if not reference_mean > 0:
        raise UserError(f"rule {label!r}: the reference mean of {rule.metric} is "
                        f"{reference_mean:g} ({where}, {len(reference)} run(s)); a ratio needs a "
                        f"reference above 0, so bound {rule.metric} with max or min instead")
    ratio = float(values.mean()) / reference_mean
    bound = rule.effective_bound
    is_max = rule.bound_kind == "max_ratio"
    inside = ratio <= bound if is_max else ratio >= bound
    margin = _margin(rule, ratio, bound)
    base = f"ratio of means to {where}"
    if inside:
        return Verdict(rule, PASS, ratio, bound, margin, len(values), len(reference), None,
                       base)
    if len(values) < 2 or len(reference) < 2 or (values.std() == 0 and reference.std() == 0):
        return Verdict(rule, FAIL, ratio, bound, margin, len(values), len(reference), None,
                       f"{base}; no significance test possible (one run on a side, or no "
                       "spread): the bound alone decides")
    # H0: the selection's mean is within bound x the reference's mean.
    p = welch_p_value(values, reference * bound, greater=is_max)
    if p < SIGNIFICANCE:
        return Verdict(rule, FAIL, ratio, bound, margin, len(values), len(reference), p,
                       f"{base}; beyond the bound and significant (Welch, p = {p:.2g})")
    return Verdict(rule, INCONCLUSIVE, ratio, bound, margin, len(values), len(reference), p,
                   f"{base}; beyond the bound but within noise (Welch, p = {p:.2g} >= "
                   f"{SIGNIFICANCE})")


def _margin(rule: Rule, value: float, bound: float) -> float:
    if bound == 0:
        return math.nan
    room = (bound - value) if rule.bound_kind.startswith("max") else (value - bound)
    return room / abs(bound)
