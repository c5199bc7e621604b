"""Records into one tidy table: the single loader that ``report`` and ``check`` share.

``load(directories)`` reads every record of one or more sweep folders into a pandas DataFrame,
one row per run, every run whatever its status (a report counts failed runs; it never averages
them). Columns, units in their names:

* identity: ``run_id``, ``status``, ``reason``, ``sweep``, ``created_at``;
* the config, as bare columns: ``model``, ``dataset``, ``image_size``, ``precision``,
  ``width``, ``data_fraction``, ``seed``, ``repeat``, ``latent_dim``, ``batch_size``,
  ``epochs``, ``steps``, ``lr``, ``stop_at_target`` (true or false), the eval settings as
  ``eval_<name>``. A user's class has its class path in ``model`` (a data module's in
  ``dataset``), null ``image_size``, ``latent_dim`` and ``lr`` (and ``batch_size`` with a data
  module), and adds ``width_arg`` and a column per init arg as the grid set it,
  ``model.init_args.<name>`` and ``data.init_args.<name>``: config fields like the others
  (``configuration_columns``), text as text and numbers as numbers;
* timings: ``setup_s``, ``extractor_s``, ``trainer_fit_s`` (the wall time of ``trainer.fit``,
  idle baseline and meters' start included; ``duration_fit_s`` is the fit window alone),
  ``eval_s``, ``process_s``; training: ``batches`` (per rank), ``optimizer_steps``,
  ``samples_seen`` (every rank's), ``world_size``, ``flops_per_step``, ``stopped_by``,
  ``stopped_at_epoch``;
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
  was drawn for all of them), ``gpu_shared`` (its GPU energy is not its own alone);
* quality at the end of training: ``kid``, ``kid_std``, ``fid``, ``sample_precision`` and
  ``sample_recall`` (of samples, apart from the config's ``precision``), ``density``,
  ``coverage``, ``memorisation``, ``elbo_nats``, ``nll_nats``, ``nll_bits_per_dim``,
  ``recon_mse``; ``best_epoch``, ``best_kid``, ``energy_to_quality_j``, ``extractor_id``,
  ``extractor_sha256``, ``extractor_accuracy``, ``quality_withheld``; ``quality_metric``,
  ``quality_mode`` (``kid``, ``min`` where a record does not say), ``quality_target``,
  ``target_reached`` and ``target_reached_epoch``. A metric other than KID has its final
  value in a column of its name (``val_acc``), its best in ``best_<name>`` (a name another
  column has gets ``quality_`` before it, with a line in ``problems``: ``quality_columns``);
* environment: ``accelerator``, ``device_name``, ``hostname``, ``greenbench_version``,
  ``git_sha``.

Every column has one type. A number stored as text is read as a number; a value that is not a
number, not finite, or not plausible (a negative joule, more than ``MAX_PLAUSIBLE``) is missing
(NaN), and so is a flag that is neither true nor false; other text columns hold text. Each such
repair is one line in ``problems`` (``results.repair``). ``load_curves`` gives the quality
curves in long form (one row per run and epoch: ``CURVE_FIELDS``, and a run's own quality
metric in its column), repaired the same way.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from greenbench.energy.meters import COMPONENTS, GPU, SHARED_DEVICE
from greenbench.energy.monitor import FIT, TRAIN, WARMUP, WINDOWS
from greenbench.records import (
    CONFIGURATION_FIELDS,
    CURVE_FIELDS,
    INIT_ARG_COLUMN,
    INIT_ARGS_KEYS,
    POINT_FIELDS,
    QUALITY_MODES,
    STOP_AT_TARGET_KEY,
    TRAINER_ARG_COLUMN,
    TRAINER_KEY,
    WIDTH_ARG_KEY,
)
from greenbench.results.quality import (
    DEFAULT_METRIC,
    SCORE_COLUMNS,
    Quality,
    columns,
    direction,
    quality_of,
)
from greenbench.results.repair import MAX_PLAUSIBLE, repaired, text
from greenbench.store import SweepStore

__all__ = [
    "MAX_PLAUSIBLE",
    "QUALITY_METRIC_COLUMNS",
    "SCORE_COLUMNS",
    "argument_columns",
    "configuration_columns",
    "flatten",
    "frame",
    "group_keys",
    "load",
    "load_curves",
    "quality_columns",
    "read_records",
]

# model.init_args., data.init_args., trainer.
ARGUMENT_PREFIXES = (
    *(INIT_ARG_COLUMN.format(section=section, name="") for section in INIT_ARGS_KEYS),
    TRAINER_ARG_COLUMN.format(name=""),
)
# What a run's quality is (``quality``): per configuration, split only where it differs
# between configurations of one model.
QUALITY_METRIC_COLUMNS = ("quality_metric", "quality_mode")


def argument_columns(results: pd.DataFrame | Iterable[str]) -> list[str]:
    """The columns of arguments among ``results``' (``model.init_args.<name>``, then
    ``data.init_args.<name>``, then the trainer's ``trainer.<keyword>``), each kind's by name."""
    names = [str(column) for column in results]
    return [column for prefix in ARGUMENT_PREFIXES
            for column in sorted(name for name in names if name.startswith(prefix))]


def configuration_columns(results: pd.DataFrame | Iterable[str]) -> list[str]:
    """The config fields of a configuration present in ``results``: every config axis but seed
    and repeat, the ``width_arg`` of a user's class, every init arg of one, every keyword
    of a trainer section, and ``stop_at_target``."""
    names = set(map(str, results))
    keys = [key for key in CONFIGURATION_FIELDS if key in names]
    return keys + [WIDTH_ARG_KEY] * (WIDTH_ARG_KEY in names) + argument_columns(names) + \
        [STOP_AT_TARGET_KEY] * (STOP_AT_TARGET_KEY in names)


def group_keys(results: pd.DataFrame) -> list[str]:
    """The keys of a configuration present in ``results`` (``configuration_columns``); split by
    quality metric too where one model's runs name several, and by feature extractor when the
    runs used several."""
    keys = configuration_columns(results)
    for key in QUALITY_METRIC_COLUMNS:
        if key in results and "model" in results and len(results) and (
                results.groupby("model", dropna=False)[key].nunique() > 1).any():
            keys.append(key)
    if results.get("extractor_id") is not None and results["extractor_id"].nunique() > 1:
        keys.append("extractor_id")
    return keys


def quality_columns(metric: str, logged: bool = False) -> tuple[str, str]:
    """The columns of a quality metric's final and best values: ``val_acc`` and
    ``best_val_acc``; ``kid`` and ``best_kid``; ``quality_batches`` for a metric named like
    another column (``results.quality``); ``quality_recall`` for a module's own ``recall``
    (``logged``), greenbench's being ``sample_recall``."""
    return columns(metric, _taken(), logged)


@functools.cache
def _taken() -> frozenset[str]:
    """The names of the results table's own columns, and of the curves'."""
    return frozenset(flatten({})) | {"run_id", "label", WIDTH_ARG_KEY, *CURVE_FIELDS}


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
    records = list(records)
    table = pd.DataFrame([flatten(record) for record in records])
    qualities = [(record.get("run_id"), quality_of(record)) for record in records]
    if problems is not None:
        problems += _quality_problems(qualities)
    scores = {column for _, found in qualities
              for column in quality_columns(found.metric, found.logged)}
    # repairs replace columns one by one: defragment
    return repaired(table, problems, scores=scores).copy()


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One record as one row (the values as the record holds them; ``frame`` repairs types)."""
    config = _dict(record.get("config"))
    row: dict[str, Any] = {
        "run_id": record.get("run_id"),
        "status": record.get("status"),
        "reason": record.get("reason"),
        "sweep": record.get("sweep"),
        "created_at": record.get("created_at"),
        **{key: config.get(key) for key in POINT_FIELDS},
        **{f"eval_{key}": value for key, value in _dict(config.get("eval")).items()},
        STOP_AT_TARGET_KEY: config.get(STOP_AT_TARGET_KEY, False),
        **_user_class(config),
    }
    timings = _dict(record.get("timings"))
    row.update({key: timings.get(key) for key in (
        "setup_s", "extractor_s", "trainer_fit_s", "eval_s", "process_s")})
    train = _dict(record.get("train"))
    row.update({key: train.get(key) for key in ("batches", "optimizer_steps", "samples_seen",
                                                "world_size", "stopped_by")})
    row["stopped_at_epoch"] = _dict(train.get("stopped_at")).get("epoch")
    row["flops_per_step"] = record.get("flops_per_step")
    row.update(_energy(_dict(record.get("energy"))))
    carbon = _dict(record.get("carbon"))
    row.update({key: carbon.get(key) for key in (
        "kwh", "gco2", "intensity_g_per_kwh", "intensity_source", "pue")})
    row.update({key: record.get(key) for key in ("executor", "node", "node_concurrency")})
    row.update(_quality(record))
    row.update(_generation(_dict(record.get("generation"))))
    env = _dict(record.get("environment"))
    row.update({key: env.get(key) for key in ("accelerator", "device_name", "hostname")})
    row.update({"greenbench_version": env.get("greenbench"), "git_sha": env.get("git_sha")})
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
    row["gpu_shared"] = _dict(total_components.get(GPU)).get("scope") == SHARED_DEVICE
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
    lines = [" ".join(text(item).split()) for item in items]
    return "\n".join(line for line in lines if line) or None


def _user_class(config: dict[str, Any]) -> dict[str, Any]:
    """The ``width_arg`` and init args of a user's classes, each init arg a column, and each
    keyword of a trainer section (its callbacks and loggers as their class names)."""
    row: dict[str, Any] = {WIDTH_ARG_KEY: config[WIDTH_ARG_KEY]} if WIDTH_ARG_KEY in config else {}
    for section, key in INIT_ARGS_KEYS.items():
        for name, value in _dict(config.get(key)).items():
            row[INIT_ARG_COLUMN.format(section=section, name=name)] = _exact(value)
    for name, value in _dict(config.get(TRAINER_KEY)).items():
        if isinstance(value, (dict, list)):
            value = ", ".join(str(_dict(item).get("class_path", item)).rpartition(".")[2]
                              for item in (value if isinstance(value, list) else [value]))
        row[TRAINER_ARG_COLUMN.format(name=name)] = _exact(value)
    return row


def _exact(value: Any) -> Any:
    """An integer a float cannot hold exactly (beyond 2**53) as its digits, so that no column of
    floats rounds it and no two configurations merge; anything else as it is."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return str(value)
    return value


def _quality(record: dict[str, Any]) -> dict[str, Any]:
    quality = _dict(record.get("quality"))
    final, best = _dict(quality.get("final")), _dict(quality.get("best"))
    extractor = _dict(quality.get("extractor"))
    own = quality_of(record)
    row = {  # greenbench's scores: apart from a module's own metric of the same name
        **{column: final.get(f"sample_{key}", None if own.logged and key == own.metric
                             else final.get(key)) for key, column in SCORE_COLUMNS.items()},
        "best_epoch": best.get("epoch"),
        "best_kid": best.get("kid"),
        "energy_to_quality_j": quality.get("energy_to_quality_j"),
        "extractor_id": extractor.get("id"),
        "extractor_sha256": extractor.get("sha256"),
        "extractor_accuracy": extractor.get("accuracy"),
        "quality_withheld": quality.get("withheld"),
        "quality_metric": own.metric,
        "quality_mode": own.mode,
        "quality_target": own.target,
        "target_reached": quality.get("target_reached"),
        "target_reached_epoch": _dict(quality.get("target_reached_at")).get("epoch"),
    }
    row["quality_column"] = SCORE_COLUMNS[DEFAULT_METRIC]
    if own.metric != DEFAULT_METRIC:
        column, best_column = quality_columns(own.metric, own.logged)
        row[column], row[best_column] = final.get(own.metric), best.get(own.metric)
        row["quality_column"] = column
    return row


def _quality_problems(qualities: list[tuple[Any, Quality]]) -> list[str]:
    """One line per quality metric named like another column (its columns are renamed), and
    per metric whose direction the records contradict or do not give."""
    renamed: dict[str, list[Any]] = {}
    modes: dict[tuple[str, str], list[Any]] = {}
    for run, found in qualities:
        column = quality_columns(found.metric, found.logged)[0]
        if (found.metric not in SCORE_COLUMNS or found.logged) and column != found.metric:
            renamed.setdefault(found.metric, []).append(run)
        written = "" if found.written_mode is None else text(found.written_mode)
        if found.mode is None or (written in QUALITY_MODES and written != found.mode):
            modes.setdefault((found.metric, written), []).append(run)
    lines = []
    for metric, runs in renamed.items():
        column, best = quality_columns(metric)
        lines.append(f"quality.metric: {_runs(runs, 'name')} the metric {metric!r}, which is "
                     f"already a results column; its values are in {column} and {best}.")
    for (metric, written), runs in modes.items():
        if written in QUALITY_MODES:
            lines.append(f"quality.mode: {_runs(runs, 'give')} mode {written} for {metric}, but "
                         f"{direction(metric, None)} for {metric}; read as that.")
        else:
            given = f"{written!r}, not max or min" if written else "none"
            lines.append(f"quality.mode: {_runs(runs, 'give')} no mode for {metric} ({given}); "
                         "they are not ranked by it.")
    return lines


def _runs(runs: list[Any], verb: str) -> str:
    """``2 runs (a, b) give``, ``1 run (a) gives``."""
    named = ", ".join(map(str, runs[:3])) + (f" and {len(runs) - 3} more" if len(runs) > 3
                                             else "")
    one = len(runs) == 1
    return f"{len(runs)} run{'' if one else 's'} ({named}) {verb}{'s' if one else ''}"


def load_curves(records: Iterable[dict[str, Any]], problems: list[str] | None = None
                ) -> pd.DataFrame:
    """The quality curves, one row per run and scored epoch (repaired like ``frame``): the
    ``CURVE_FIELDS``, and a run's own quality metric in its column (``val_acc``)."""
    rows, extra = [], {}
    for record in records:
        curve = record.get("quality_curve")
        found = quality_of(record)
        metric = found.metric
        column = None if metric in CURVE_FIELDS else quality_columns(metric, found.logged)[0]
        for point in curve if isinstance(curve, list) else []:
            if not isinstance(point, dict):
                continue
            row = {"run_id": record.get("run_id"), **point}
            if column is not None:
                row[column] = point.get(metric)
                extra[column] = None
            rows.append(row)
    curves = pd.DataFrame(rows, columns=["run_id", *CURVE_FIELDS, *extra])
    return repaired(curves, problems, "quality_curve.", scores=set(extra))
