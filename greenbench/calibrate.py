"""Run-to-run spread on this machine, so that a budget's tolerance can be checked against it.

``greenbench calibrate SWEEP.yaml`` runs every configuration of the sweep ``--repeats`` times
(the identical point, same seed: what varies is the machine), and writes, per metric, the
largest coefficient of variation (standard deviation over mean) any configuration showed, to
``calibration.json`` beside the sweep file (or ``--out``). ``greenbench check`` reads the
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

from greenbench import environment, results
from greenbench.budget import Rule
from greenbench.errors import UserError
from greenbench.executors import LocalExecutor
from greenbench.files import atomic_write
from greenbench.progress import SweepProgress
from greenbench.report.tables import group_keys
from greenbench.runner import run_sweep
from greenbench.sweep import expand, load_sweep

FILE_NAME = "calibration.json"
METRICS = (
    "energy_train_j", "energy_train_net_j", "energy_total_j", "j_per_1k_samples", "gco2",
    "duration_train_s", "flops_per_step", "kid", "fid", "nll_nats",
)
DETECTABLE = 2.0  # a change must exceed this many coefficients of variation to be told apart


def calibrate(sweep_file: Path, repeats: int, out: Path | None, progress: SweepProgress) -> Path:
    """Run the sweep ``repeats`` times per point and write the spread; returns the file."""
    if repeats < 2:
        raise UserError("--repeats: at least 2 runs are needed to measure a spread")
    sweep = load_sweep(sweep_file).model_copy(update={"repeats": repeats})
    run_sweep(sweep, LocalExecutor(), progress)
    wanted = {spec.run_id for spec in expand(sweep)}
    frame = results.load([sweep.directory])
    spread = coefficients_of_variation(frame[frame["run_id"].isin(wanted)])
    out = out or sweep_file.parent / FILE_NAME
    env = environment.describe()
    content = {
        "sweep": sweep.name,
        "repeats": repeats,
        "coefficient_of_variation": spread,
        "machine": {key: env[key] for key in ("hostname", "cpu", "cpu_count", "platform")},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write(out, (json.dumps(content, indent=2) + "\n").encode())
    return out


def coefficients_of_variation(frame: pd.DataFrame) -> dict[str, float]:
    """Per metric, the largest standard deviation over mean of any configuration (ok runs)."""
    ok = frame[frame["status"] == "ok"]
    spread: dict[str, float] = {}
    for metric in METRICS:
        values = pd.to_numeric(ok[metric], errors="coerce")
        grouped = values.groupby([ok[k] for k in group_keys(ok)], dropna=False)
        cvs = (grouped.std(ddof=1) / grouped.mean().abs()).dropna()
        if len(cvs):
            spread[metric] = float(cvs.max())
    return spread


def read(path: Path) -> dict[str, Any] | None:
    """A calibration file, or None when there is none; a broken one is a ``UserError``."""
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
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
