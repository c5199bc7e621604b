"""The run record: one JSON document per point of a sweep.

Every record has the same top-level keys, in this order::

    schema, run_id, status, reason, sweep, config, data, timings, train, flops_per_step,
    energy, carbon, quality, quality_curve, executor, node, node_concurrency, environment,
    created_at

``status`` is one of ``STATUSES``; ``reason`` says why when it is not ``ok``. Units live in key
names (``train_s``, ``samples_seen``, ``total_j``). ``energy`` holds the windows measured by the
``EnergyCallback`` (every figure with its source), ``carbon`` the grams of CO2 of the ``total``
window with the intensity used, ``quality`` the sample-quality scores at the end and at the best
point of ``quality_curve``. ``executor`` (``local`` or ``ray``), ``node`` (the host that ran the
point) and ``node_concurrency`` (how many points shared that host while it ran) say where the
energy was drawn. ``schema`` is raised when a key changes meaning.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

SCHEMA = 1

OK, SKIPPED, DIVERGED, FAILED = "ok", "skipped", "diverged", "failed"
STATUSES = (OK, SKIPPED, DIVERGED, FAILED)
# Outcomes that re-running the same point would only repeat; a failed point is run again.
FINAL = frozenset({OK, SKIPPED, DIVERGED})


@dataclass
class PointResult:
    """What running one point produces: its record, and files keyed by path in the sweep folder
    (``samples/<run_id>.png``). The parent process stores both; the child never does."""

    record: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


def new_record(run_id: str, sweep: str, config: dict[str, Any]) -> dict[str, Any]:
    """The skeleton of a record, before the point has run."""
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "status": None,
        "reason": None,
        "sweep": sweep,
        "config": dict(config),
        "data": None,
        "timings": {},
        "train": None,
        "flops_per_step": None,
        "energy": None,
        "carbon": None,
        "quality": None,
        "quality_curve": None,
        "executor": None,
        "node": None,
        "node_concurrency": None,
        "environment": None,
        "created_at": None,
    }


def finish(record: dict[str, Any], status: str, reason: str | None = None) -> dict[str, Any]:
    """Set the outcome and the creation time; a status other than ok needs a reason."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    if status != OK and not reason:
        raise ValueError(f"a {status} record needs a reason")
    record["status"] = status
    record["reason"] = reason if status != OK else None
    record["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def last_line(error: BaseException) -> str:
    """``ValueError: bad thing`` from an exception, on one line, as a record's reason."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    message = lines[-1].strip() if lines else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def to_json(record: dict[str, Any]) -> str:
    """Serialise a record; a number that is not finite (a diverged loss) becomes null."""
    return json.dumps(_finite_or_null(record), indent=2, allow_nan=False) + "\n"


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value
