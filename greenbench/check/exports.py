"""What a check decided, in the formats that CI's benchmark trackers read: pure functions from
verdicts (and the results they were decided on) to text; the command writes them after every
verdict is decided.

- ``benchmark_json``: github-action-benchmark's custom format (``customSmallerIsBetter`` /
  ``customBiggerIsBetter``), a JSON list of ``{name, unit, value, range, extra}``, one entry per
  verdict, lower-is-better and higher-is-better entries apart (the tool takes one direction per
  file).
- ``bmf``: Bencher Metric Format, ``{benchmark: {measure: {value, lower_value, upper_value}}}``.

Every entry is one verdict: a rule at one configuration. Its name is the verdict's label (the
rule's name, plus the configuration when the rule has several: ``name [precision=bf16-mixed]``),
the same as its JUnit testcase, so it is the same from run to run of the same sweep and budgets.
Its value is the statistic the rule bounds: the mean (or the end of its 95 % interval that
``statistic`` names) in the metric's unit, or, for a ratio rule, the ratio of means. Its interval
is the 95 % interval of that statistic where both sides have repeats: the Student-t interval of
the mean, or for a ratio the delta-method interval the report gives savings
(``results.stats.ratio_interval``); with one run there is none, and none is invented.

Which way is better: a quality metric's own direction (KID lower, ``quality.mode: max`` higher),
else the rule's bound (``max``/``max_ratio``: lower is better; ``min``/``min_ratio``: higher).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from greenbench.check.budget import Verdict, describe
from greenbench.check.verdicts import printable
from greenbench.errors import UserError
from greenbench.records import DEFAULT_QUALITY, HIGHER_IS_BETTER, OK, higher_is_better
from greenbench.results import quality_columns
from greenbench.results.quality import SCORE_COLUMNS
from greenbench.results.stats import confidence_half_width, ratio_interval

BENCHER_NAME_MAX = 1024  # Bencher: a benchmark's name, at most this many characters
BENCHER_SLUG_MAX = 64  # Bencher: a measure's slug
# a results column's unit, where its name does not end in one (``_j``, ``_s``, ``_w``)
UNITS = {
    "kwh": "kWh", "gco2": "gCO2eq", "intensity_g_per_kwh": "gCO2eq/kWh",
    "j_per_1k_samples": "J/1k samples", "j_per_image": "J/image",
    "j_per_1k_images": "J/1k images", "images_per_s": "images/s", "ms_per_batch": "ms",
    "flops_per_step": "FLOPs/step", "nll_bits_per_dim": "bits/dim",
}
SUFFIX_UNITS = {"_j": "J", "_s": "s", "_w": "W", "_nats": "nats"}
_SCORE_OF_COLUMN = {column: key for key, column in SCORE_COLUMNS.items()}


@dataclass(frozen=True)
class Quality:
    """The quality metric of a verdict's runs, beside the rule's own metric."""

    metric: str
    mean: float
    half: float  # 95 % half-width; NaN with one run
    n: int
    higher_is_better: bool | None


@dataclass(frozen=True)
class Figures:
    """The numbers of one verdict that every export shows."""

    verdict: Verdict
    name: str  # the verdict's label, printable: stable from run to run
    unit: str  # the metric's
    value: float  # the statistic the rule bounds: the ratio, for a ratio rule
    low: float  # its 95 % interval (NaN without repeats on every side)
    high: float
    mean: float  # the configuration's mean of the metric, in ``unit``
    half: float  # and the half-width of its 95 % interval
    reference_mean: float  # the reference's, for a ratio rule (else NaN)
    cv: float  # the largest coefficient of variation of its runs and the reference's (or NaN)
    higher_is_better: bool  # which way the value is better
    quality: Quality | None

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def value_unit(self) -> str:
        """The value's unit: the metric's, or ``ratio of <unit>`` for a ratio rule."""
        return f"ratio of {self.unit}" if self.verdict.rule.is_ratio else self.unit


def unit_of(metric: str) -> str:
    """A results column's unit: ``J``, ``s``, ``kWh``...; a quality metric is its own unit."""
    if metric in UNITS:
        return UNITS[metric]
    for suffix, unit in SUFFIX_UNITS.items():
        if metric.endswith(suffix):
            return unit
    return metric


def figures(verdicts: Sequence[Verdict], results: pd.DataFrame) -> list[Figures]:
    """The figures of each verdict, from its runs (``results``: the table it was decided on);
    a ``UserError`` when two verdicts would share a name, or a value is not a finite number."""
    qualities = _run_qualities(results[results["status"] == OK])
    out = [_figures(verdict, qualities) for verdict in verdicts]
    seen: dict[str, Verdict] = {}
    for entry in out:
        if not math.isfinite(entry.value):
            raise UserError(f"rule {entry.name!r}: its value {entry.value} is not a finite "
                            "number, which no export can carry")
        other = seen.setdefault(entry.name, entry.verdict)
        if other is not entry.verdict:
            raise UserError(f"rules {other.rule.name!r} and {entry.verdict.rule.name!r} both give "
                            f"a verdict named {entry.name!r}; rename one so that every export "
                            "entry has a name of its own")
    return out


# run_id -> the quality metric its record names (None: the reference models' KID), its mode,
# and its value of that metric
RunQuality = tuple[str | None, str | None, float]


def _run_qualities(ok: pd.DataFrame) -> dict[str, RunQuality]:
    n = len(ok)
    ids = ok["run_id"].astype(str).tolist() if "run_id" in ok else []
    metrics = ok["quality_metric"].tolist() if "quality_metric" in ok else [None] * n
    modes = ok["quality_mode"].tolist() if "quality_mode" in ok else [None] * n
    columns: dict[str, list[float]] = {}
    out: dict[str, RunQuality] = {}
    for position, (run_id, metric, mode) in enumerate(zip(ids, metrics, modes, strict=True)):
        named = metric if isinstance(metric, str) else None
        column = quality_columns(named or DEFAULT_QUALITY["metric"])[0]
        if column not in columns:
            columns[column] = (pd.to_numeric(ok[column], errors="coerce").tolist()
                               if column in ok else [math.nan] * n)
        out[run_id] = (named, mode if isinstance(mode, str) else None, columns[column][position])
    return out


def _figures(verdict: Verdict, qualities: dict[str, RunQuality]) -> Figures:
    rule = verdict.rule
    mean, sd, half = _spread(verdict.values)
    reference_mean, reference_sd, _ = _spread(verdict.reference)
    if rule.is_ratio:
        low, high = ratio_interval(mean, sd, len(verdict.values), reference_mean, reference_sd,
                                   len(verdict.reference))
    else:
        low, high = mean - half, mean + half
    runs = [qualities[run_id] for run_id in verdict.run_ids if run_id in qualities]
    return Figures(
        verdict=verdict, name=printable(verdict.label), unit=unit_of(rule.metric),
        value=verdict.value, low=low, high=high, mean=mean, half=half,
        reference_mean=reference_mean if rule.is_ratio else math.nan,
        cv=max((_cv(side) for side in (verdict.values, verdict.reference) if len(side) > 1),
               default=math.nan),
        higher_is_better=_higher_is_better(verdict, runs), quality=_quality(runs))


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, standard deviation and 95 % half-width (NaN for what one run cannot give)."""
    if not values:
        return math.nan, math.nan, math.nan
    # identical values have no spread, not the rounding error of computing one
    sd = (math.nan if len(values) < 2 else 0.0 if len(set(values)) == 1
          else float(np.std(values, ddof=1)))
    return float(np.mean(values)), sd, confidence_half_width(sd, len(values))


def _cv(values: Sequence[float]) -> float:
    mean, sd, _ = _spread(values)
    return sd / abs(mean) if mean != 0 else math.nan


def _quality(runs: list[RunQuality]) -> Quality | None:
    """The quality metric of these runs (theirs, else KID), where they have a value of it."""
    named = next((metric for metric, _, _ in runs if metric is not None), None)
    mode = next((mode for _, mode, _ in runs if mode is not None),
                DEFAULT_QUALITY["mode"] if named is None else None)
    values = [value for _, _, value in runs if math.isfinite(value)]
    if not values:
        return None
    metric = named or DEFAULT_QUALITY["metric"]
    mean, _, half = _spread(values)
    return Quality(metric, mean, half, len(values), higher_is_better(metric, mode))


def _higher_is_better(verdict: Verdict, runs: list[RunQuality]) -> bool:
    """Which way the verdict's value is better: its metric's, where it is a quality metric
    with a direction; else the way its rule bounds it."""
    metric = verdict.rule.metric
    for own, mode, _ in runs:
        if own is not None and quality_columns(own)[0] == metric:
            higher = higher_is_better(own, mode)
            if higher is not None:
                return higher
    if _SCORE_OF_COLUMN.get(metric) in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[_SCORE_OF_COLUMN[metric]]
    return verdict.rule.bound_kind.startswith("min")


# --------------------------------------------------------------------------- the formats


def fmt(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, without an exponent between 1e-4 and 1e6:
    ``fmt(2566.47, 3)`` is ``2570``, not ``2.57e+03``."""
    return format(float(f"{value:.{digits}g}"), "g")


def number(value: float) -> float:
    """A figure as JSON carries it: a plain float, 6 significant digits."""
    return float(f"{value:.6g}")


def _range(entry: Figures) -> str | None:
    """``± x``: x reaches both ends of the interval from the value (a ratio's interval, and an
    interval end's, is not centred on the value)."""
    if not entry.has_interval:
        return None
    return f"± {number(max(entry.high - entry.value, entry.value - entry.low))!r}"


def extra(entry: Figures) -> str:
    """The verdict, its bound and the quality beside it, a line each (github-action-benchmark
    shows ``extra`` in the chart's tooltip)."""
    verdict = entry.verdict
    rule = verdict.rule
    sign = "<=" if rule.bound_kind.startswith("max") else ">="
    tolerance = f" ({rule.bound_kind} {rule.bound:g} + tolerance {rule.tolerance:.0%})" if (
        rule.tolerance) else ""
    unit = "" if entry.unit == rule.metric else f" {entry.unit}"
    lines = [f"{verdict.result}: {rule.metric} {rule.statistic if not rule.is_ratio else 'ratio'}"
             f" {sign} {fmt(verdict.bound, 4)}{tolerance}",
             f"mean {fmt(entry.mean, 4)}{unit}" + (
                 f" ± {fmt(entry.half, 2)} (95 %)" if math.isfinite(entry.half) else "")
             + f" over {verdict.n} run(s)"]
    if rule.is_ratio:
        lines.append(f"reference mean {fmt(entry.reference_mean, 4)}{unit} over "
                     f"{verdict.n_reference} run(s)")
    if math.isfinite(entry.cv):
        lines.append(f"run-to-run variation (CV) {entry.cv:.1%}")
    quality = entry.quality
    if quality is not None:
        spread = f" ± {fmt(quality.half, 2)}" if math.isfinite(quality.half) else ""
        lines.append(f"quality: {printable(quality.metric)} {fmt(quality.mean, 4)}{spread}")
    return "\n".join(lines)


def benchmark_entries(entries: Sequence[Figures]) -> tuple[list[dict], list[dict]]:
    """github-action-benchmark's entries: (lower is better, higher is better)."""
    smaller: list[dict] = []
    bigger: list[dict] = []
    for entry in entries:
        item = {"name": entry.name, "unit": entry.value_unit, "value": number(entry.value)}
        if (spread := _range(entry)) is not None:
            item["range"] = spread
        item["extra"] = extra(entry)
        (bigger if entry.higher_is_better else smaller).append(item)
    return smaller, bigger


def benchmark_json(items: list[dict]) -> str:
    return json.dumps(items, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def bigger_path_name(name: str) -> str:
    """``energy.json`` -> ``energy-bigger.json``: where the higher-is-better entries go."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}-bigger.{suffix}" if dot and stem else f"{name}-bigger"


def measure_slug(metric: str, ratio: bool) -> str:
    """A Bencher measure's slug from a results column: ``energy_fit_j`` -> ``energy-fit-j``,
    and ``energy-fit-j-ratio`` for a ratio rule; at most 64 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", metric.lower()).strip("-") or "metric"
    return _fit(slug + ("-ratio" if ratio else ""), BENCHER_SLUG_MAX, "-")


def _fit(text: str, limit: int, joint: str) -> str:
    """``text``, or its start and a hash of the whole where it is longer than ``limit``: still
    the same from run to run, and still telling two long names apart."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return text[:limit - len(digest) - len(joint)] + joint + digest


def bmf(entries: Sequence[Figures]) -> str:
    """Bencher Metric Format: one benchmark per verdict, its measure the rule's metric."""
    content: dict[str, dict] = {}
    for entry in entries:
        metric = {"value": number(entry.value)}
        if entry.has_interval:
            metric["lower_value"] = min(number(entry.low), metric["value"])
            metric["upper_value"] = max(number(entry.high), metric["value"])
        slug = measure_slug(entry.verdict.rule.metric, entry.verdict.rule.is_ratio)
        content[_fit(entry.name, BENCHER_NAME_MAX, " ")] = {slug: metric}
    return json.dumps(content, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def configuration_text(verdict: Verdict) -> str:
    """``precision=bf16-mixed, width=0.5``, or '' for a rule of one configuration."""
    return fields_text(verdict.configuration)


def fields_text(fields: dict) -> str:
    """``{precision: bf16-mixed}`` as ``precision=bf16-mixed``."""
    return describe(fields, "[]", "=")[1:-1]
