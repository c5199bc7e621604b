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
* energy, per window ``w`` in idle, warmup, train, eval, total: ``energy_<w>_j``,
  ``energy_<w>_net_j``, ``duration_<w>_s`` and ``energy_<w>_<gpu|cpu|ram>_j``; then
  ``j_per_1k_samples`` (of the train window), ``idle_power_w``, ``kwh``, ``gco2``,
  ``intensity_g_per_kwh``, ``intensity_source``, ``pue``;
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

``load_curves`` gives the quality curves in long form (one row per run and epoch).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from greenbench.energy.meters import COMPONENTS
from greenbench.energy.monitor import WINDOWS
from greenbench.records import CONFIG_KEYS, CONFIGURATION_KEYS, CURVE_FIELDS
from greenbench.store import SweepStore

QUALITY_KEYS = {  # record key -> column
    "kid": "kid", "kid_std": "kid_std", "fid": "fid", "precision": "sample_precision",
    "recall": "sample_recall", "density": "density", "coverage": "coverage",
    "memorisation": "memorisation", "elbo_nats": "elbo_nats", "nll_nats": "nll_nats",
    "nll_bits_per_dim": "nll_bits_per_dim", "recon_mse": "recon_mse",
}


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


def load(folders: Iterable[Path]) -> pd.DataFrame:
    """One row per record of the sweep folders; see the module docstring for the columns."""
    return frame(read_records(folders))


def frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Records (as dicts) into the results table."""
    return pd.DataFrame([flatten(record) for record in records])


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One record as one row."""
    config = record.get("config") or {}
    row: dict[str, Any] = {
        "run_id": record.get("run_id"),
        "status": record.get("status"),
        "reason": record.get("reason"),
        "sweep": record.get("sweep"),
        "created_at": record.get("created_at"),
        **{key: config.get(key) for key in CONFIG_KEYS},
        **{f"eval_{key}": value for key, value in (config.get("eval") or {}).items()},
    }
    timings = record.get("timings") or {}
    row.update({
        "setup_s": timings.get("setup_s"), "extractor_s": timings.get("extractor_s"),
        "fit_s": timings.get("train_s"), "eval_s": timings.get("eval_s"),
        "process_s": timings.get("process_s"),
    })
    train = record.get("train") or {}
    row.update({key: train.get(key) for key in ("batches", "optimizer_steps", "samples_seen")})
    row["flops_per_step"] = record.get("flops_per_step")
    row.update(_energy(record.get("energy") or {}))
    carbon = record.get("carbon") or {}
    row.update({key: carbon.get(key) for key in (
        "kwh", "gco2", "intensity_g_per_kwh", "intensity_source", "pue")})
    row.update({key: record.get(key) for key in ("executor", "node", "node_concurrency")})
    row.update(_quality(record.get("quality") or {}))
    env = record.get("environment") or {}
    row.update({
        "accelerator": env.get("accelerator"), "device_name": env.get("device_name"),
        "hostname": env.get("hostname"), "greenbench_version": env.get("greenbench"),
        "git_sha": env.get("git_sha"),
    })
    return row


def _energy(energy: dict[str, Any]) -> dict[str, Any]:
    windows = energy.get("windows") or {}
    row: dict[str, Any] = {}
    for name in WINDOWS:
        window = windows.get(name) or {}
        row[f"energy_{name}_j"] = window.get("total_j")
        row[f"energy_{name}_net_j"] = window.get("net_j")
        row[f"duration_{name}_s"] = window.get("duration_s")
        components = window.get("components") or {}
        for component in COMPONENTS:
            row[f"energy_{name}_{component}_j"] = (components.get(component) or {}).get("joules")
    train, total = windows.get("train") or {}, windows.get("total") or {}
    row["j_per_1k_samples"] = train.get("j_per_1k_samples")
    row["idle_power_w"] = energy.get("idle_power_w")
    row["energy_measured"] = total.get("measured")
    row["energy_valid"] = total.get("valid")
    for component in COMPONENTS:
        row[f"source_{component}"] = ((total.get("components") or {}).get(component) or {}).get(
            "source")
    return row


def _quality(quality: dict[str, Any]) -> dict[str, Any]:
    final, best = quality.get("final") or {}, quality.get("best") or {}
    extractor = quality.get("extractor") or {}
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


def load_curves(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The quality curves, one row per run and scored epoch."""
    rows = [
        {"run_id": record.get("run_id"), **point}
        for record in records
        for point in record.get("quality_curve") or []
    ]
    return pd.DataFrame(rows, columns=["run_id", *CURVE_FIELDS])
