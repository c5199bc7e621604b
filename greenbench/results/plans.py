"""What ``greenbench plan`` predicted, read back beside what was measured.

``read_plan(folder)`` gives a sweep folder's ``plan.json`` (None when it has none, or one this
greenbench does not read); ``predictions(folders)`` gives one row per predicted point:
``run_id``, ``predicted_fit_j`` (with ``_low`` and ``_high``), ``predicted_fit_s`` and
``prediction_upper_bound`` (a point that may stop before its budget: its prediction bounds it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from greenbench.store import PLAN_FILE

PLAN_SCHEMA = 1
PREDICTION_COLUMNS = ("predicted_fit_j", "predicted_fit_j_low", "predicted_fit_j_high",
                      "predicted_fit_s", "prediction_upper_bound")


def read_plan(folder: str | Path) -> dict[str, Any] | None:
    """A sweep folder's ``plan.json``, or None when it has none or it is not a plan this
    greenbench reads."""
    try:
        plan = json.loads((Path(folder) / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(plan, dict) or plan.get("schema") != PLAN_SCHEMA or \
            not isinstance(plan.get("points"), list):
        return None
    return plan


def predictions(folders: Iterable[str | Path]) -> pd.DataFrame:
    """One row per point a plan of ``folders`` predicted (the first plan naming a run_id wins);
    values that are not finite numbers are missing."""
    rows: dict[str, dict[str, Any]] = {}
    for folder in folders:
        plan = read_plan(folder)
        for point in plan["points"] if plan else []:
            if not isinstance(point, dict) or not isinstance(point.get("run_id"), str):
                continue
            rows.setdefault(point["run_id"], {
                "run_id": point["run_id"],
                **{key: _number(point.get(key)) for key in PREDICTION_COLUMNS[:-1]},
                "prediction_upper_bound": point.get("upper_bound") is True,
            })
    return pd.DataFrame(list(rows.values()), columns=["run_id", *PREDICTION_COLUMNS])


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan
