"""The calibration file: this machine's run-to-run spread, against which budget tolerances are
checked.

``greenbench calibrate`` (``greenbench.sweep.calibrate``) runs a sweep's points several times and
writes, per metric, the largest coefficient of variation (standard deviation over mean) any
configuration showed, to ``calibration.json``. ``greenbench check`` reads the
``calibration.json`` beside a budgets file and warns when a rule's tolerance is below twice that
variation: a change that small cannot be told from this machine's noise.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from greenbench import environment
from greenbench.check.rules import Rule
from greenbench.errors import UserError
from greenbench.files import atomic_write
from greenbench.records import CURVE_SCORES, OK
from greenbench.results import group_keys, quality_columns

FILE_NAME = "calibration.json"
METRICS = (
    "energy_fit_j", "energy_fit_net_j", "duration_fit_s", "energy_train_j", "energy_train_net_j",
    "energy_total_j", "j_per_1k_samples", "gco2", "duration_train_s", "flops_per_step",
    *CURVE_SCORES,
)
DETECTABLE = 2.0  # a change must exceed this many coefficients of variation to be told apart


def coefficients_of_variation(frame: pd.DataFrame) -> dict[str, float]:
    """Per metric (``METRICS``, and the quality metric of users' classes, such as
    ``val_acc``), the largest standard deviation over mean of any configuration (ok runs)."""
    ok = frame[frame["status"] == OK]
    spread: dict[str, float] = {}
    own = {quality_columns(str(metric))[0] for metric in ok.get("quality_metric", [])}
    for metric in [*METRICS, *sorted(column for column in own - set(METRICS) if column in ok)]:
        values = pd.to_numeric(ok[metric], errors="coerce")
        grouped = values.groupby([ok[k] for k in group_keys(ok)], dropna=False)
        cvs = (grouped.std(ddof=1) / grouped.mean().abs()).dropna()
        if len(cvs):
            spread[metric] = float(cvs.max())
    return spread


def write(path: Path, sweep: str, repeats: int, frame: pd.DataFrame) -> Path:
    """Write the spread of ``frame``'s runs (a sweep run ``repeats`` times) to ``path``."""
    env = environment.describe()
    content = {
        "sweep": sweep,
        "repeats": repeats,
        "coefficient_of_variation": coefficients_of_variation(frame),
        "machine": {key: env[key] for key in ("hostname", "cpu", "cpu_count", "platform")},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write(path, (json.dumps(content, indent=2) + "\n").encode())
    return path


def read(path: Path) -> dict[str, float] | None:
    """A calibration file's spread per metric, or None when there is no file; a broken one is
    a ``UserError``."""
    if not path.is_file():
        return None
    try:
        content: Any = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): float(v) for k, v in content["coefficient_of_variation"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"{path}: not a calibration file ({error})") from None


def warnings_for(rules: list[Rule], spread: dict[str, float] | None, where: Path) -> list[str]:
    """One line per rule whose tolerance is below what this machine can resolve."""
    if not spread:
        return []
    lines = []
    for rule in rules:
        cv = spread.get(rule.metric)
        if cv is not None and math.isfinite(cv) and rule.tolerance < DETECTABLE * cv:
            lines.append(
                f"rule {rule.name!r}: tolerance {rule.tolerance:.1%} is below twice the "
                f"run-to-run variation of {rule.metric} on this machine ({cv:.1%}, {where}); "
                "a change that small cannot be told from noise"
            )
    return lines
