"""One type per column of the results table, whatever the records hold.

A number stored as text is read as a number; a value that is not a number, not finite, or not
plausible (a negative joule, more than ``MAX_PLAUSIBLE``) is missing (NaN), and so is a flag
that is neither true nor false; other text columns hold text. A column of unknown meaning (an
``eval_`` setting, an init arg) keeps its values when they are of one kind (numbers as numbers,
text as text) and becomes text when they are mixed. Each repair is one line in ``problems``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from typing import Any

import pandas as pd

from greenbench.energy.monitor import WINDOWS
from greenbench.records import CURVE_SCORES, POINT_FIELDS, TEXT_POINT_FIELDS
from greenbench.results.quality import SCORE_COLUMNS, TAKEN_PREFIXES

# No run draws 10^18 J (280 TWh), lasts 10^18 s or scores 10^18: such a value is a broken meter
# or a damaged file, and drawing it overflows the plots' axes.
MAX_PLAUSIBLE = 1e18
FLAGS = ("energy_measured", "energy_valid", "gpu_shared", "warmup_only", "stop_at_target",
         "target_reached", *(f"reliable_{w}" for w in WINDOWS))
_AMOUNT = re.compile(  # physical amounts: never negative
    r"^(energy_.*_j|duration_.*_s|(setup|extractor|fit|eval|process)_s|j_per_1k_samples|"
    r"idle_power_w|kwh|gco2|intensity_g_per_kwh|pue|fit_j|j_per_image|j_per_1k_images|"
    r"images_per_s|ms_per_batch|generate_s)$")
COUNTS = ("batches", "optimizer_steps", "samples_seen", "world_size", "flops_per_step",
          "node_concurrency", "best_epoch", "epoch", "step", "target_reached_epoch",
          "stopped_at_epoch")
SCORES = (*SCORE_COLUMNS.values(), "best_kid", "extractor_accuracy", "quality_target",
          *CURVE_SCORES)
NUMERIC_CONFIG = tuple(key for key in POINT_FIELDS if key not in TEXT_POINT_FIELDS)
OTHER_PREFIXES = TAKEN_PREFIXES  # eval settings and init args: of whatever kind they are


def repaired(table: pd.DataFrame, problems: list[str] | None, prefix: str = "",
             scores: Collection[str] = ()) -> pd.DataFrame:
    """``table`` with one type per column (see the module docstring); ``scores`` are more
    columns that hold scores (the quality metrics of users' modules). Each repair is one line
    in ``problems``, named ``prefix`` + column."""
    found: dict[tuple[str, str], list[tuple[Any, Any]]] = {}  # (column, why) -> (run, value)
    runs = table["run_id"] if "run_id" in table else pd.Series(index=table.index, dtype=object)
    for column in table.columns:
        kind = "score" if column in scores else _kind(column)
        if kind == "text":
            table[column] = _astext(table[column])
            continue
        if kind == "flag":
            repaired, why = _as_flags(table[column])
        elif kind == "other":
            table[column] = _uniform(table[column])
            continue
        else:
            repaired, why = _as_numbers(table[column], kind)
        for index, reason in why.items():
            found.setdefault((column, reason), []).append((runs.get(index), table.at[index,
                                                                                       column]))
        table[column] = repaired
    if problems is not None:
        for (column, why), where in found.items():
            problems.append(_problem(prefix + column, why, where))
    return table


def _kind(column: str) -> str:
    if column in FLAGS:
        return "flag"
    if _AMOUNT.match(column):
        return "amount"
    if column in COUNTS:
        return "count"
    if column in SCORES:
        return "score"
    if column in NUMERIC_CONFIG:
        return "number"
    if column.startswith(OTHER_PREFIXES):
        return "other"
    return "text"


def _as_numbers(values: pd.Series, kind: str) -> tuple[pd.Series, dict[Any, str]]:
    """Floats (or the column's own numeric type), and why a value was changed, by index."""
    why: dict[Any, str] = {}
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values
    else:
        numbers = pd.Series(math.nan, index=values.index, dtype=float)
        for index, value in values[values.notna()].items():  # each value that is there
            number = _number(value)
            if isinstance(value, str) and not math.isnan(number):
                why[index] = "text"
            elif math.isnan(number):
                why[index] = "not a number"
            numbers[index] = number
    floats = numbers.astype(float)
    low = 0.0 if kind in ("amount", "count") else -MAX_PLAUSIBLE
    high = math.inf if kind == "count" else MAX_PLAUSIBLE
    if kind == "number":
        low, high = -math.inf, math.inf
    present = floats.notna()
    bad = present & ~(floats.abs().lt(math.inf) & floats.ge(low) & floats.le(high))
    for index in floats.index[bad]:
        why[index] = "implausible"
    return (numbers.where(~bad) if bad.any() else numbers), why


def _number(value: Any) -> float:
    if _missing(value) or isinstance(value, bool):
        return math.nan
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_flags(values: pd.Series) -> tuple[pd.Series, dict[Any, str]]:
    why = {index: "not a flag" for index, value in values.items()
           if not _missing(value) and not isinstance(value, bool)}
    if not why:
        return values, why
    return values.where(~values.index.isin(list(why)), None).astype(object), why


def _astext(values: pd.Series) -> pd.Series:
    if pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values):
        return values  # pandas' own text type: text already
    if all(isinstance(value, str) or _missing(value) for value in values):
        return values
    return values.map(lambda value: None if _missing(value) else text(value))


def _uniform(values: pd.Series) -> pd.Series:
    """A column of unknown meaning: left as it is when its values are of one kind (integers too
    large for 64 bits as floats), else text."""
    if pd.api.types.is_numeric_dtype(values) or not pd.api.types.is_object_dtype(values):
        return values
    kinds = {type(value) for value in values if not _missing(value)}
    if kinds <= {int, float}:
        return values.map(_number).astype(float)
    if len(kinds) <= 1 and not kinds & {dict, list}:
        return values
    return _astext(values)


def text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _problem(column: str, why: str, where: list[tuple[Any, Any]]) -> str:
    runs = [str(run) for run, _ in where]
    named = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
    one = len(runs) == 1
    counted = f"{len(runs)} run{'' if one else 's'} ({named})"
    holds = "holds" if one else "hold"
    value = where[0][1]
    example = f"{value:g}" if isinstance(value, float) else text(value)
    example = example if len(example) <= 40 else example[:39] + "…"
    example = repr(example) if isinstance(value, str) else example
    return {
        "text": f"{column}: {counted} stored it as text, e.g. {example}; read as a number.",
        "not a number": f"{column}: {counted} {holds} a value that is not a number, e.g. "
                        f"{example}; treated as missing.",
        "implausible": f"{column}: {counted} {holds} a value that is not plausible, e.g. "
                       f"{example}; treated as missing.",
        "not a flag": f"{column}: {counted} {holds} a value that is neither true nor false, "
                      f"e.g. {example}; treated as missing.",
    }[why]
