"""Energy budgets for CI: rules over the results table, and one place that decides pass or fail.

A budgets file is a list of rules (or ``rules:`` holding that list)::

    - name: bf16 GAN trains on less energy than 32-true
      select: {model: gan, precision: bf16-mixed}
      metric: energy_train_j
      max_ratio: 0.9
      relative_to: {model: gan, precision: 32-true}
      tolerance: 0.05

Each rule selects ok runs by config fields and bounds one results column, absolutely
(``max``/``min``) or as a ratio (``max_ratio``/``min_ratio``) to another selection of the same
results (``relative_to``, measured on the same machine in the same run) or to the same
selection in a stored results file (``check --baseline``). ``tolerance`` widens the bound by a
fraction of it; ``statistic`` is the mean, or the upper or lower end of its 95 % interval.

Noise: an absolute bound compares the statistic with the bound. A ratio beyond its bound fails
only when the difference is also significant (one-sided Welch t-test, p < 0.01); otherwise it is
INCONCLUSIVE. With one run on a side, or no spread at all (FLOPs are exact), no test is possible
and the bound alone decides; the verdict says so.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field, model_validator

from greenbench.energy.meters import GPU
from greenbench.errors import UserError
from greenbench.records import CONFIG_KEYS, OK
from greenbench.results.stats import confidence_half_width, welch_p_value
from greenbench.yamlfile import StrictModel, load_yaml, validate

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
SIGNIFICANCE = 0.01
SELECTABLE = CONFIG_KEYS  # a rule selects runs by what was trained
Scalar = str | int | float | bool
BOUNDS = ("max", "min", "max_ratio", "min_ratio")
# metrics that include a node's CPU and RAM energy (the GPU's own columns do not)
NODE_LEVEL_METRICS = ("energy_", "j_per_1k_samples", "kwh", "gco2", "idle_power_w")
GPU_ONLY_SUFFIX = f"_{GPU}_j"


class Rule(StrictModel):
    name: str = Field(min_length=1)
    select: dict[str, Scalar] = Field(default_factory=dict)
    metric: str
    max: float | None = None
    min: float | None = None
    max_ratio: float | None = Field(default=None, gt=0)
    min_ratio: float | None = Field(default=None, gt=0)
    relative_to: dict[str, Scalar] | None = None
    tolerance: float = Field(default=0.0, ge=0, le=10)
    statistic: Literal["mean", "upper_ci", "lower_ci"] = "mean"

    @model_validator(mode="after")
    def _one_bound(self) -> Rule:
        bounds = [k for k in BOUNDS if getattr(self, k) is not None]
        if len(bounds) != 1:
            raise ValueError("give exactly one of max, min, max_ratio, min_ratio")
        if self.relative_to is not None and bounds[0] in ("max", "min"):
            raise ValueError("relative_to goes with max_ratio or min_ratio, not an absolute bound")
        for key in [*self.select, *(self.relative_to or {})]:
            if key not in SELECTABLE:
                close = difflib.get_close_matches(key, SELECTABLE, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"{key!r} is not a config field to select on{hint}")
        return self

    @property
    def bound_kind(self) -> str:
        return next(k for k in BOUNDS if getattr(self, k) is not None)

    @property
    def bound(self) -> float:
        return getattr(self, self.bound_kind)

    @property
    def is_ratio(self) -> bool:
        return self.bound_kind.endswith("_ratio")

    @property
    def effective_bound(self) -> float:
        """The bound widened by the tolerance: up for a max, down for a min."""
        widen = 1 + self.tolerance if self.bound_kind.startswith("max") else 1 - self.tolerance
        return self.bound * widen


class Budgets(StrictModel):
    rules: list[Rule] = Field(min_length=1)


def load_budgets(path: str | Path, columns: list[str]) -> list[Rule]:
    """Read and validate a budgets file; ``columns`` are the metrics a rule may name."""
    path = Path(path)
    data = load_yaml(path)
    if isinstance(data, list):
        data = {"rules": data}
    rules = validate(Budgets, data, path).rules
    for i, rule in enumerate(rules):
        if rule.metric not in columns:
            close = difflib.get_close_matches(rule.metric, columns, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{path}: rules[{i}].metric: {rule.metric!r} is not a results "
                            f"column{hint}")
    names = [rule.name for rule in rules]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"{path}: rule name {name!r} appears twice")
    return rules


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


def evaluate(rules: list[Rule], results: pd.DataFrame,
             baseline: pd.DataFrame | None = None) -> list[Verdict]:
    """Decide every rule; a rule whose selection matches no ok run is a ``UserError``."""
    ok = results[results["status"] == OK]
    reference_pool = baseline[baseline["status"] == OK] if baseline is not None else None
    return [_decide(rule, ok, reference_pool) for rule in rules]


def _decide(rule: Rule, ok: pd.DataFrame, baseline: pd.DataFrame | None) -> Verdict:
    values = _values(rule, ok, rule.select, "select")
    if not rule.is_ratio:
        value, how = _statistic(values, rule.statistic)
        return _absolute(rule, value, len(values), how)
    if rule.relative_to is not None:
        reference = _values(rule, ok, rule.relative_to, "relative_to")
        where = f"relative_to {_describe(rule.relative_to)}"
    elif baseline is not None:
        reference = _values(rule, baseline, rule.select, "select (in the --baseline results)")
        where = "the same selection in the --baseline results"
    else:
        raise UserError(f"rule {rule.name!r}: {rule.bound_kind} needs relative_to, or a "
                        "--baseline results file to compare with")
    return _relative(rule, values, reference, where)


def shared_node_warnings(rules: list[Rule], results: pd.DataFrame) -> list[str]:
    """One line per energy rule whose runs shared a node: their CPU and RAM energy is the
    node's, drawn for every point running there, not each run's own."""
    ok = results[results["status"] == OK]
    if "node_concurrency" not in ok:
        return []
    lines = []
    for rule in rules:
        if not rule.metric.startswith(NODE_LEVEL_METRICS) or rule.metric.endswith(GPU_ONLY_SUFFIX):
            continue
        chosen = _selected(ok, rule.select)
        if rule.relative_to is not None:
            chosen |= _selected(ok, rule.relative_to)
        runs = ok[chosen]
        shared = pd.to_numeric(runs["node_concurrency"], errors="coerce") > 1
        if shared.any():
            lines.append(
                f"rule {rule.name!r}: {int(shared.sum())} of its {len(runs)} runs shared a node "
                f"with other points, so the CPU and RAM part of {rule.metric} is the node's, not "
                "the run's; run energy budgets with executor.exclusive_node: true"
            )
    return lines


def _selected(frame: pd.DataFrame, selection: dict[str, Any]) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for key, wanted in selection.items():
        column = frame[key]
        mask &= (column.astype(float) == float(wanted)) if _numeric(wanted) else (
            column.astype(str) == str(wanted))
    return mask


def _values(rule: Rule, frame: pd.DataFrame, selection: dict[str, Any], field: str) -> pd.Series:
    mask = _selected(frame, selection)
    values = pd.to_numeric(frame.loc[mask, rule.metric], errors="coerce").dropna()
    if values.empty:
        raise UserError(f"rule {rule.name!r}: {field} {_describe(selection)} matches no ok run "
                        f"with a {rule.metric} value")
    return values


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(selection: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in selection.items()) + "}"


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


def _relative(rule: Rule, values: pd.Series, reference: pd.Series, where: str) -> Verdict:
    ratio = float(values.mean()) / float(reference.mean())
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
