"""Records into one tidy table: the single loader that ``report`` and ``check`` share.

``load(directories)`` reads every record of one or more sweep folders into a pandas DataFrame,
one row per run, every run whatever its status (a report counts failed runs; it never averages
them). Columns, units in their names:

* identity: ``run_id``, ``status``, ``reason``, ``sweep``, ``created_at``;
* the config, as bare columns: ``model``, ``dataset``, ``image_size``, ``precision``,
  ``width``, ``data_fraction``, ``seed``, ``repeat``, ``latent_dim``, ``batch_size``,
  ``epochs``, ``steps``, ``lr``, and the eval settings as ``eval_<name>``;
* timings: ``setup_s``, ``extractor_s``, ``fit_s`` (the record's ``timings.train_s``: all of
  ``trainer.fit``), ``eval_s``, ``process_s``; training: ``batches``, ``optimizer_steps``,
  ``samples_seen``, ``flops_per_step``;
* energy, per window ``w`` of the monitor (``WINDOWS``: idle, warmup, train, eval, ..., fit,
  total): ``energy_<w>_j``, ``energy_<w>_net_j``, ``duration_<w>_s`` and
  ``energy_<w>_<gpu|cpu|ram>_j``. ``fit`` is the training energy (warm-up plus train; for a
  record from before the fit window, the sum of the two); ``train`` is the steady state after
  warm-up, and its columns, like ``j_per_1k_samples``, are empty (never 0) for a run that never
  left warm-up (``warmup_only``). Then ``idle_power_w``, ``kwh``, ``gco2``,
  ``intensity_g_per_kwh``, ``intensity_source``, ``pue`` and ``energy_warnings`` (the record's
  warnings, one a line);
* provenance: ``energy_measured`` and ``energy_valid`` (of the total window),
  ``source_<gpu|cpu|ram>``, and where the run ran: ``executor``, ``node``,
  ``node_concurrency`` (the most points that shared its node; above 1 its CPU and RAM energy
  was drawn for all of them);
* quality at the end of training: ``kid``, ``kid_std``, ``fid``, ``sample_precision``,
  ``sample_recall`` (the improved precision and recall of samples, named apart from the config's
  numeric ``precision``), ``density``, ``coverage``, ``memorisation``, ``elbo_nats``,
  ``nll_nats``, ``nll_bits_per_dim``, ``recon_mse``; ``best_epoch``, ``best_kid``,
  ``energy_to_quality_j``; ``extractor_id``, ``extractor_sha256``, ``extractor_accuracy``,
  ``quality_withheld``;
* environment: ``accelerator``, ``device_name``, ``hostname``, ``greenbench_version``,
  ``git_sha``.

Every column has one type. A number stored as text is read as a number; a value that is not a
number, not finite, or not plausible (a negative joule, more than ``MAX_PLAUSIBLE``) is missing
(NaN), and so is a flag that is neither true nor false; other text columns hold text. Each such
repair is one line in ``problems``. ``load_curves`` gives the quality curves in long form (one
row per run and epoch), repaired the same way.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from greenbench.energy.meters import COMPONENTS
from greenbench.energy.monitor import FIT, TRAIN, WARMUP, WINDOWS
from greenbench.records import (
    CONFIG_KEYS,
    CONFIGURATION_KEYS,
    CURVE_FIELDS,
    CURVE_KEYS,
    TEXT_CONFIG_KEYS,
)
from greenbench.store import SweepStore

QUALITY_KEYS = {  # record key -> column
    "kid": "kid", "kid_std": "kid_std", "fid": "fid", "precision": "sample_precision",
    "recall": "sample_recall", "density": "density", "coverage": "coverage",
    "memorisation": "memorisation", "elbo_nats": "elbo_nats", "nll_nats": "nll_nats",
    "nll_bits_per_dim": "nll_bits_per_dim", "recon_mse": "recon_mse",
}
# No run draws 10^18 J (280 TWh), lasts 10^18 s or scores 10^18: such a value is a broken meter
# or a damaged file, and drawing it overflows the plots' axes.
MAX_PLAUSIBLE = 1e18
TEXT_CONFIG = TEXT_CONFIG_KEYS
FLAGS = ("energy_measured", "energy_valid", "warmup_only", *(f"reliable_{w}" for w in WINDOWS))
_AMOUNT = re.compile(  # physical amounts: never negative
    r"^(energy_.*_j|duration_.*_s|(setup|extractor|fit|eval|process)_s|j_per_1k_samples|"
    r"idle_power_w|kwh|gco2|intensity_g_per_kwh|pue|train_j|j_per_image|j_per_1k_images|"
    r"images_per_s|ms_per_batch|generate_s)$")
COUNTS = ("batches", "optimizer_steps", "samples_seen", "flops_per_step", "node_concurrency",
          "best_epoch", "epoch", "step")
SCORES = (*QUALITY_KEYS.values(), "best_kid", "extractor_accuracy", *CURVE_KEYS)
NUMERIC_CONFIG = tuple(key for key in CONFIG_KEYS if key not in TEXT_CONFIG)


def group_keys(results: pd.DataFrame) -> list[str]:
    """The keys of a configuration (every config axis but seed and repeat) present in
    ``results``; split by feature extractor too when the runs used several."""
    keys = [key for key in CONFIGURATION_KEYS if key in results]
    if results.get("extractor_id") is not None and results["extractor_id"].nunique() > 1:
        keys.append("extractor_id")
    return keys


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def read_records(
    folders: Iterable[Path], warn: Callable[[str], None] = _warn
) -> list[dict[str, Any]]:
    """Every record of the folders, read through the store. A file that is not a record of the
    supported schema is skipped, and so is a run_id already read from another folder; ``warn``
    gets one line for each."""
    records: dict[str, dict[str, Any]] = {}
    where: dict[str, Path] = {}
    for folder in folders:
        found, unreadable = SweepStore(folder).read_records()
        for path, why in unreadable:
            warn(f"{path}: skipped, not a record this greenbench reads ({why})")
        for run_id, record in found.items():
            if run_id in records:
                warn(f"{folder}: run {run_id} is also in {where[run_id]}; counted once, "
                     f"from {where[run_id]}")
                continue
            records[run_id], where[run_id] = record, folder
    return list(records.values())


def load(folders: Iterable[Path], warn: Callable[[str], None] = _warn) -> pd.DataFrame:
    """One row per record of the sweep folders; see the module docstring for the columns.
    Skipped files and repaired values are reported to ``warn``, one line each."""
    problems: list[str] = []
    table = frame(read_records(folders, warn), problems)
    for problem in problems:
        warn(problem)
    return table


def frame(records: Iterable[dict[str, Any]], problems: list[str] | None = None) -> pd.DataFrame:
    """Records (as dicts) into the results table; each repaired value is reported in
    ``problems`` (one line per column and kind of repair)."""
    table = pd.DataFrame([flatten(record) for record in records])
    return _repaired(table, problems).copy()  # repairs replace columns one by one: defragment


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One record as one row (the values as the record holds them; ``frame`` repairs types)."""
    config = _dict(record.get("config"))
    row: dict[str, Any] = {
        "run_id": record.get("run_id"),
        "status": record.get("status"),
        "reason": record.get("reason"),
        "sweep": record.get("sweep"),
        "created_at": record.get("created_at"),
        **{key: config.get(key) for key in CONFIG_KEYS},
        **{f"eval_{key}": value for key, value in _dict(config.get("eval")).items()},
    }
    timings = _dict(record.get("timings"))
    row.update({
        "setup_s": timings.get("setup_s"), "extractor_s": timings.get("extractor_s"),
        "fit_s": timings.get("train_s"), "eval_s": timings.get("eval_s"),
        "process_s": timings.get("process_s"),
    })
    train = _dict(record.get("train"))
    row.update({key: train.get(key) for key in ("batches", "optimizer_steps", "samples_seen")})
    row["flops_per_step"] = record.get("flops_per_step")
    row.update(_energy(_dict(record.get("energy"))))
    carbon = _dict(record.get("carbon"))
    row.update({key: carbon.get(key) for key in (
        "kwh", "gco2", "intensity_g_per_kwh", "intensity_source", "pue")})
    row.update({key: record.get(key) for key in ("executor", "node", "node_concurrency")})
    row.update(_quality(_dict(record.get("quality"))))
    row.update(_generation(_dict(record.get("generation"))))
    env = _dict(record.get("environment"))
    row.update({
        "accelerator": env.get("accelerator"), "device_name": env.get("device_name"),
        "hostname": env.get("hostname"), "greenbench_version": env.get("greenbench"),
        "git_sha": env.get("git_sha"),
    })
    return row


def _generation(generation: dict[str, Any]) -> dict[str, Any]:
    """Sampling energy: the record's ``generation`` (its ``generate`` window, per image)."""
    per_image = generation.get("j_per_image")
    return {
        "generate_images": generation.get("images"),
        "generate_batch_size": generation.get("batch_size"),
        "generate_s": generation.get("seconds"),
        "j_per_image": per_image,
        "j_per_1k_images": 1000 * per_image if isinstance(per_image, (int, float)) else None,
        "images_per_s": generation.get("images_per_s"),
        "ms_per_batch": generation.get("ms_per_batch"),
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _energy(energy: dict[str, Any]) -> dict[str, Any]:
    windows = {name: _dict(window) for name, window in _dict(energy.get("windows")).items()}
    warmup_only = _never_left_warmup(windows)
    if not windows.get(FIT):
        windows[FIT] = _fit(windows, bool(warmup_only))
    row: dict[str, Any] = {}
    for name in WINDOWS:
        window = windows.get(name) or {}
        empty = name == TRAIN and warmup_only  # no steady state: empty, never 0
        row[f"energy_{name}_j"] = None if empty else window.get("total_j")
        row[f"energy_{name}_net_j"] = None if empty else window.get("net_j")
        row[f"duration_{name}_s"] = None if empty else window.get("duration_s")
        components = _dict(window.get("components"))
        for component in COMPONENTS:
            joules = _dict(components.get(component)).get("joules")
            row[f"energy_{name}_{component}_j"] = None if empty else joules
        row[f"reliable_{name}"] = window.get("reliable")
        row[f"reliability_{name}"] = window.get("reliability_reason")
    train, total = windows.get(TRAIN) or {}, windows.get("total") or {}
    row["j_per_1k_samples"] = None if warmup_only else train.get("j_per_1k_samples")
    row["warmup_only"] = warmup_only
    row["idle_power_w"] = energy.get("idle_power_w")
    row["energy_measured"] = total.get("measured")
    row["energy_valid"] = total.get("valid")
    total_components = _dict(total.get("components"))
    for component in COMPONENTS:
        row[f"source_{component}"] = _dict(total_components.get(component)).get("source")
    row["energy_warnings"] = _warnings(energy.get("warnings"))
    return row


def _never_left_warmup(windows: dict[str, dict[str, Any]]) -> bool | None:
    """Whether the run's training was all warm-up: its train window lasted no time, or saw no
    sample while warm-up did (None when the record has no warm-up and train windows)."""
    warmup, train = windows.get(WARMUP), windows.get(TRAIN)
    if not warmup or not train:
        return None
    if _zero(train.get("duration_s")):
        return True
    return _zero(train.get("samples")) and not _zero(warmup.get("samples"))


def _zero(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def _fit(windows: dict[str, dict[str, Any]], warmup_only: bool) -> dict[str, Any]:
    """The fit window of a record from before it existed: warm-up plus train, where both are
    there (a train window that was never entered adds nothing)."""
    warmup, train = windows.get(WARMUP), windows.get(TRAIN)
    if not warmup or not train:
        return {}

    def add(first: Any, second: Any) -> Any:
        if second is None and warmup_only:
            return first
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                      for v in (first, second))
        return first + second if numbers else None

    parts = [_dict(warmup.get("components")), _dict(train.get("components"))]
    return {
        "total_j": add(warmup.get("total_j"), train.get("total_j")),
        "net_j": add(warmup.get("net_j"), train.get("net_j")),
        "duration_s": add(warmup.get("duration_s"), train.get("duration_s")),
        "components": {component: {"joules": add(*(_dict(part.get(component)).get("joules")
                                                  for part in parts))}
                       for component in COMPONENTS},
    }


def _warnings(warnings: Any) -> str | None:
    """The record's energy warnings as text, one a line (a warning's own breaks removed)."""
    if warnings is None:
        return None
    items = warnings if isinstance(warnings, list) else [warnings]
    lines = [" ".join(_text(item).split()) for item in items]
    return "\n".join(line for line in lines if line) or None


def _quality(quality: dict[str, Any]) -> dict[str, Any]:
    final, best = _dict(quality.get("final")), _dict(quality.get("best"))
    extractor = _dict(quality.get("extractor"))
    return {
        **{column: final.get(key) for key, column in QUALITY_KEYS.items()},
        "best_epoch": best.get("epoch"),
        "best_kid": best.get("kid"),
        "energy_to_quality_j": quality.get("energy_to_quality_j"),
        "extractor_id": extractor.get("id"),
        "extractor_sha256": extractor.get("sha256"),
        "extractor_accuracy": extractor.get("accuracy"),
        "quality_withheld": quality.get("withheld"),
    }


def load_curves(records: Iterable[dict[str, Any]], problems: list[str] | None = None
                ) -> pd.DataFrame:
    """The quality curves, one row per run and scored epoch (repaired like ``frame``)."""
    rows = [
        {"run_id": record.get("run_id"), **point}
        for record in records
        for point in (record.get("quality_curve") if isinstance(record.get("quality_curve"),
                                                                  list) else [])
        if isinstance(point, dict)
    ]
    curves = pd.DataFrame(rows, columns=["run_id", *CURVE_FIELDS])
    return _repaired(curves, problems, "quality_curve.")


# ---------------------------------------------------------------------------------------------
# One type per column


def _repaired(table: pd.DataFrame, problems: list[str] | None, prefix: str = "") -> pd.DataFrame:
    found: dict[tuple[str, str], list[tuple[Any, Any]]] = {}  # (column, why) -> (run, value)
    runs = table["run_id"] if "run_id" in table else pd.Series(index=table.index, dtype=object)
    for column in table.columns:
        kind = _kind(column)
        if kind == "text":
            table[column] = _as_text(table[column])
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
    if column.startswith("eval_"):
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


def _as_text(values: pd.Series) -> pd.Series:
    if pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values):
        return values  # pandas' own text type: text already
    if all(isinstance(value, str) or _missing(value) for value in values):
        return values
    return values.map(lambda value: None if _missing(value) else _text(value))


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
    return _as_text(values)


def _text(value: Any) -> str:
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
    example = f"{value:g}" if isinstance(value, float) else _text(value)
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
