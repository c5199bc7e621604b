"""``greenbench plan``: what a sweep will cost, predicted from a short pilot of each configuration.

A pilot is a point with a small budget (``point.pilot``): the configuration's first point, its
warm-up, then ``pilot_batches`` measured training batches (by default as many as make the
steady state a reliable window for its meter), its validations measured apart, nothing
generated. From it, for every point of the configuration::

    fit  = warm-up + (B - W) x J per batch + V x J per validation
    eval = S x J per scoring

where B is the training batches its budget implies (``train.steps``, or epochs x batches per
epoch at its data fraction, as this Trainer counts them), W the warm-up batches, V the
validations the Trainer will run in B batches and S the scorings (every ``eval.every_n_epochs``
epochs and at the end). The interval of ``fit`` is the 95 % Student-t interval of the steady
state's J per batch over the pilot's stretches, times the batches: the pilot's own spread,
nothing more (a machine that drifts over an hour is not in it). Seconds likewise. With
``stop_at_target`` or a user's callback that may end fit early, a prediction is an upper bound
and says so.

The pilots' records are kept as ``pilots/<run_id>.json`` (a run that is interrupted resumes with
the pilots it has), and the plan as ``plan.json``; ``results.read_plan`` reads it back for
``report`` and ``run --dry-run``.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterable
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from greenbench.energy.carbon import resolve_intensity
from greenbench.errors import UserError
from greenbench.files import atomic_write
from greenbench.records import (
    CURVE_SCORES,
    OK,
    RUN_FIELDS,
    STOP_AT_TARGET_KEY,
    TRAINER_KEY,
    RunSpec,
    run_id,
    to_json,
)
from greenbench.results.plans import PLAN_SCHEMA
from greenbench.results.stats import confidence_half_width
from greenbench.store import PILOTS_FOLDER, PLAN_FILE, SweepStore
from greenbench.sweep.devices import check_devices
from greenbench.sweep.executors import Executor
from greenbench.sweep.progress import SweepProgress
from greenbench.sweep.schema import Sweep, expand

# Callbacks that may end fit before its budget: their points' predictions are upper bounds.
EARLY_STOPPERS = ("EarlyStopping",)


def configuration_id(config: dict[str, Any]) -> str:
    """What the points of one configuration share: the run_id of their config without seed
    and repeat."""
    return run_id({key: value for key, value in config.items() if key not in RUN_FIELDS})


def pilots(specs: Iterable[RunSpec], batches: int | None) -> list[tuple[RunSpec, list[RunSpec]]]:
    """One pilot per configuration, with the points it predicts: the configuration's first
    point, measured for ``batches`` training batches after warm-up (None: long enough to be
    reliable), never stopped at a target, generating nothing."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(configuration_id(spec.config), []).append(spec)
    planned = []
    for points in groups.values():
        first = points[0]
        config = {key: value for key, value in first.config.items()
                  if key != STOP_AT_TARGET_KEY}
        pilot = RunSpec(first.run_id, first.sweep, config, first.dataset_root,
                        energy=dict(first.energy), carbon=dict(first.carbon),
                        generate={**first.generate, "num_images": 0},
                        import_path=first.import_path, varied_args=first.varied_args,
                        pilot={"batches": batches})
        planned.append((pilot, points))
    return planned


def run_plan(sweep: Sweep, executor: Executor, progress: SweepProgress,
             batches: int | None = None, force: bool = False) -> dict[str, Any]:
    """Run the pilots ``sweep`` needs (those of an earlier plan with the same settings are
    kept, unless ``force``), write ``plan.json`` and return it."""
    if batches is not None and batches < 1:
        raise UserError("--pilot-steps: give 1 or more training batches")
    store = SweepStore(sweep.directory)
    started = time.monotonic()
    planned = pilots(expand(sweep), batches)
    if executor.name == "local":
        check_devices([pilot for pilot, _ in planned])
    with store.open_for_writing():
        kept = {} if force else _kept_pilots(store.directory / PILOTS_FOLDER, batches)
        to_run = [pilot for pilot, _ in planned if pilot.run_id not in kept]
        progress.start(f"{sweep.name} plan", str(store.directory), len(planned), len(to_run),
                       what="pilots")
        records = dict(kept)
        with closing(executor.run_all(to_run, progress)) as finished:
            for spec, result in finished:
                for relative, content in result.files.items():
                    folder, name = relative.split("/", 1)
                    store.write_file(f"{PILOTS_FOLDER}/{folder}", name, content)
                store.write_file(PILOTS_FOLDER, f"{spec.run_id}.json",
                                 to_json(result.record).encode())
                records[spec.run_id] = result.record
                progress.end_point(spec, result.record)
        plan = build_plan(sweep, planned, records, batches, time.monotonic() - started)
        atomic_write(store.directory / PLAN_FILE,
                     (json.dumps(plan, indent=2, allow_nan=False) + "\n").encode())
    return plan


def _kept_pilots(folder: Path, batches: int | None) -> dict[str, dict[str, Any]]:
    """The ok pilot records of an earlier plan asked for the same ``batches``."""
    kept = {}
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        pilot = record.get("pilot") if isinstance(record, dict) else None
        if isinstance(pilot, dict) and record.get("status") == OK and \
                pilot.get("requested_batches") == batches:
            kept[path.stem] = record
    return kept


def build_plan(sweep: Sweep, planned: list[tuple[RunSpec, list[RunSpec]]],
               records: dict[str, dict[str, Any]], batches: int | None,
               seconds: float) -> dict[str, Any]:
    """``plan.json``: a prediction for every point, the sweep's totals, the pilots' cost."""
    intensity = resolve_intensity(**sweep.carbon.model_dump())
    points, pilot_rows = [], []
    for pilot, members in planned:
        record = records.get(pilot.run_id)
        pilot_rows.append(_pilot_row(pilot, record))
        for spec in members:
            prediction = predict(record, spec) if record and record.get("status") == OK else \
                {"predicted_fit_j": None, "why_not": _why_no_prediction(record)}
            fit_j = prediction.get("predicted_fit_j")
            points.append({
                "run_id": spec.run_id, "label": spec.label,
                "configuration": {key: value for key, value in spec.config.items()
                                  if key not in RUN_FIELDS},
                "pilot_run_id": pilot.run_id, **prediction,
                "predicted_fit_gco2": None if fit_j is None else
                intensity.footprint(fit_j)["gco2"],
            })
    predicted = [point for point in points if point["predicted_fit_j"] is not None]
    return {
        "schema": PLAN_SCHEMA,
        "sweep": sweep.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pilot_batches": batches,
        "points": points,
        "predicted_points": len(predicted),
        "total_predicted_fit_j": _total(point["predicted_fit_j"] for point in predicted),
        "total_predicted_fit_j_low": _total(p["predicted_fit_j_low"] for p in predicted),
        "total_predicted_fit_j_high": _total(p["predicted_fit_j_high"] for p in predicted),
        "total_predicted_fit_s": _total(point["predicted_fit_s"] for point in predicted),
        "total_predicted_eval_j": _total(point["predicted_eval_j"] for point in predicted),
        "total_predicted_fit_gco2": _total(p["predicted_fit_gco2"] for p in predicted),
        "upper_bound": any(point.get("upper_bound") for point in predicted),
        "pilot_j": _total(row["j"] for row in pilot_rows),
        "pilot_s": round(seconds, 3),
        "intensity_g_per_kwh": intensity.g_per_kwh,
        "pilots": pilot_rows,
    }


def _total(values: Iterable[float | None]) -> float | None:
    values = list(values)
    return None if not values or any(v is None for v in values) else sum(values)


def _pilot_row(pilot: RunSpec, record: dict[str, Any] | None) -> dict[str, Any]:
    """A pilot's outcome and cost: every window its meters measured (warm-up, training,
    validation, scoring), and the idle baseline where this pilot took it (a baseline shared
    by the sweep's points is counted once, in the pilot that measured it)."""
    energy = (record or {}).get("energy") or {}
    windows = energy.get("windows") or {}
    baseline = energy.get("baseline") or {}
    own_idle = not baseline.get("shared") or baseline.get("taken_by") == pilot.run_id
    names = ("idle", "total") if own_idle else ("total",)
    joules = [windows.get(name, {}).get("total_j") for name in names]
    return {"run_id": pilot.run_id, "label": pilot.label,
            "status": None if record is None else record.get("status"),
            "reason": None if record is None else record.get("reason"),
            "measured_batches": ((record or {}).get("pilot") or {}).get("measured_batches"),
            "j": sum(j for j in joules if j is not None) if record else None,
            "s": windows.get("total", {}).get("duration_s")}


def _why_no_prediction(record: dict[str, Any] | None) -> str:
    if record is None:
        return "its pilot did not run"
    return f"its pilot ended {record.get('status')}: {record.get('reason')}"


def predict(pilot: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
    """The predicted training energy and time of ``spec`` from its configuration's pilot
    record (see the module docstring)."""
    probe, windows = pilot["pilot"], pilot["energy"]["windows"]
    warmup_batches = min(spec.energy.get("warmup_steps", 0), pilot["train"]["batches"])
    warmup_j = windows["warmup"]["total_j"] or 0.0
    warmup_s = windows["warmup"]["duration_s"] or 0.0
    segments = [s for s in probe["segments"] if s["j"] is not None and s["batches"] > 0]
    if not segments:
        return {"predicted_fit_j": None,
                "why_not": "its pilot measured no training after warm-up"}
    measured_batches = sum(s["batches"] for s in segments)
    j_per_batch = sum(s["j"] for s in segments) / measured_batches
    s_per_batch = sum(s["s"] for s in segments) / measured_batches
    rates = [s["j"] / s["batches"] for s in segments]
    spread = confidence_half_width(statistics.stdev(rates), len(rates)) \
        if len(rates) > 1 else math.nan
    total = budget_batches(spec.config, probe)
    steady = max(0, total - warmup_batches)
    validations = validation_count(total, probe)
    checks = [v for v in probe["validations"] if v["j"] is not None]
    per_validation_j = statistics.fmean(v["j"] for v in checks) if checks else 0.0
    per_validation_s = statistics.fmean(v["s"] for v in checks) if checks else 0.0
    fit_j = warmup_j + steady * j_per_batch + validations * per_validation_j
    low, high = (fit_j - steady * spread, fit_j + steady * spread) if math.isfinite(spread) \
        else (None, None)
    upper, why_upper = upper_bound(spec.config)
    return {
        "predicted_fit_j": fit_j,
        "predicted_fit_j_low": low,
        "predicted_fit_j_high": high,
        "predicted_fit_s": warmup_s + steady * s_per_batch + validations * per_validation_s,
        "predicted_eval_j": _scoring_j(pilot, spec.config, total, probe),
        "predicted_batches": total,
        "predicted_validations": validations,
        "j_per_batch": j_per_batch,
        "upper_bound": upper,
        "upper_bound_why": why_upper,
    }


def budget_batches(config: dict[str, Any], probe: dict[str, Any]) -> int:
    """Training batches the point's budget implies: its steps, or its epochs times the
    batches per epoch the pilot's Trainer counted."""
    if config.get("steps"):
        return int(config["steps"])
    per_epoch = probe.get("batches_per_epoch") or 0
    return int(config.get("epochs") or 1) * per_epoch


def validation_count(batches: int, probe: dict[str, Any]) -> int:
    """Validations Lightning runs in ``batches`` training batches: every ``val_check_batch``
    batches of every ``check_val_every_n_epoch``-th epoch (across epochs when that is None),
    and one more where a budget in steps ends fit between two."""
    every_batch, per_epoch = probe.get("val_check_batch"), probe.get("batches_per_epoch")
    if not probe.get("validates") or not every_batch or not per_epoch:
        return 0
    every_epoch = probe.get("check_val_every_n_epoch")
    if every_epoch is None:
        return batches // every_batch + (batches % every_batch > 0)
    epochs, rest = divmod(batches, per_epoch)
    count = (epochs // every_epoch) * (per_epoch // every_batch)
    if rest:
        count += rest // every_batch if (epochs + 1) % every_epoch == 0 else 0
        count += rest % every_batch > 0  # a budget that ends mid-epoch validates once more
    return count


def _scoring_j(pilot: dict[str, Any], config: dict[str, Any], batches: int,
               probe: dict[str, Any]) -> float | None:
    """Energy of scoring samples (the ``eval`` window): per scoring as the pilot measured it,
    times the scorings of the point (every ``eval.every_n_epochs`` epochs, and at the end)."""
    eval_j = pilot["energy"]["windows"]["eval"]["total_j"]
    scored = sum(1 for point in pilot.get("quality_curve") or []
                 if any(point.get(key) is not None for key in CURVE_SCORES))
    if eval_j is None or not scored:
        return None
    per_epoch = probe.get("batches_per_epoch") or 0
    epochs = batches // per_epoch if per_epoch else 0
    every = config["eval"].get("every_n_epochs")
    scorings = (epochs // every if every else 0) + (not every or epochs % every != 0)
    return eval_j / scored * scorings


def upper_bound(config: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether a point may stop before its budget, and what may stop it."""
    if config.get(STOP_AT_TARGET_KEY):
        return True, "stop_at_target"
    callbacks = (config.get(TRAINER_KEY) or {}).get("callbacks") or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        name = str(callback.get("class_path", "")).rpartition(".")[2]
        if name in EARLY_STOPPERS:
            return True, name
    return False, None


def table_lines(plan: dict[str, Any]) -> list[str]:
    """The plan as ``greenbench plan`` prints it: a row per configuration (training energy per
    point with its interval, time per point, grams of CO2 of all its points), then the sweep's
    totals and the pilots' cost beside them."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for point in plan["points"]:
        rows.setdefault(point["pilot_run_id"], []).append(point)
    labels = {pilot["run_id"]: pilot["label"].rsplit(" seed=", 1)[0] for pilot in plan["pilots"]}
    header = ("configuration", "points", "training energy per point (J)", "time per point",
              "CO2 (g), all points")
    table = [header]
    for pilot_id, points in rows.items():
        first = points[0]
        if first["predicted_fit_j"] is None:
            table.append((labels[pilot_id], str(len(points)), f"- ({first['why_not']})", "-",
                          "-"))
            continue
        interval = "" if first["predicted_fit_j_low"] is None else \
            f" ({_number(first['predicted_fit_j_low'])}-{_number(first['predicted_fit_j_high'])})"
        bound = "at most " if first["upper_bound"] else ""
        grams = sum(point["predicted_fit_gco2"] for point in points)
        table.append((labels[pilot_id], str(len(points)),
                      f"{bound}{_number(first['predicted_fit_j'])}{interval}",
                      _duration(first["predicted_fit_s"]), _number(grams, 3)))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
             for row in table]
    total, count = plan["total_predicted_fit_j"], len(plan["points"])
    if total is None:
        lines.append(f"sweep: {count} points; {count - plan['predicted_points']} cannot be "
                     "predicted (see above)")
    else:
        interval = "" if plan["total_predicted_fit_j_low"] is None else \
            f" ({_number(plan['total_predicted_fit_j_low'])}-" \
            f"{_number(plan['total_predicted_fit_j_high'])})"
        bound = "at most " if plan["upper_bound"] else ""
        lines.append(f"sweep: {count} points, {bound}{_number(total)} J{interval} of training "
                     f"predicted, {_duration(plan['total_predicted_fit_s'])} of training, "
                     f"{_number(plan['total_predicted_fit_gco2'], 3)} g CO2 at "
                     f"{plan['intensity_g_per_kwh']:g} g/kWh")
    share = "" if not total or plan["pilot_j"] is None else \
        f" ({100 * plan['pilot_j'] / total:.1f} % of the predicted training energy)"
    pilot_j = "-" if plan["pilot_j"] is None else _number(plan["pilot_j"])
    lines.append(f"pilots: {len(plan['pilots'])}, {pilot_j} J measured{share}, "
                 f"{_duration(plan['pilot_s'])} of planning")
    if plan["upper_bound"]:
        why = sorted({point["upper_bound_why"] for point in plan["points"]
                      if point.get("upper_bound")})
        lines.append(f"upper bounds: {', '.join(why)} may end points before their budget")
    return lines


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"
