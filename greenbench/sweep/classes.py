"""Checking a sweep's classes before any point runs: they import, they are Lightning classes,
they take the init args the sweep gives, and ``width_arg`` is a whole number they take; and its
trainer section: every keyword is one the Trainer takes and greenbench does not own, ``devices``
a whole number, ``strategy`` one Lightning knows by name, every callback and logger a Lightning
``Callback`` or ``Logger`` that takes its init args.

Each problem is a ``UserError`` of one line naming the sweep field (``model.class_path``,
``grid.model.init_args.lr``), so that a mistake costs a second, not a sweep of failed points.
The sweep file's folder is put on the import path for the check, as it is in every point
process, so that a ``mypkg/`` or ``mymodels.py`` beside the sweep file imports. Importing a
class imports torch and Lightning, so sweeps of the reference models skip all of this.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Protocol

from greenbench.errors import UserError
from greenbench.models import plugins
from greenbench.records import HIGHER_IS_BETTER, INIT_ARG_COLUMN
from greenbench.sweep.sections import (
    DataSection,
    Grid,
    ModelSection,
    QualitySection,
    TrainerSection,
)

# Strategies whose processes Lightning starts by means greenbench's ranks cannot stand in for.
LAUNCHES_ITSELF = ("xla", "single_xla", "single_tpu")


class SweepClasses(Protocol):
    """What of a ``schema.Sweep`` the checks read."""

    model_class: ModelSection | None
    data: DataSection | None
    quality: QualitySection | None
    trainer: TrainerSection | None
    width: float
    grid: Grid
    source_folder: str | None


def check(sweep: SweepClasses, path: Path) -> None:
    """Raise ``UserError`` (prefixed with ``path``) for the first problem with the classes of
    ``sweep``; nothing when it names none."""
    try:
        _check(sweep)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def source_digests(sweep: SweepClasses) -> dict[str, str | None]:
    """SHA-256 of the source file of each class ``sweep`` names, by class path."""
    digests = {}
    with plugins.importable_from(sweep.source_folder):
        for section, chosen in (("model", sweep.model_class), ("data", sweep.data)):
            if chosen is not None:
                cls = plugins.import_class(chosen.class_path, f"{section}.class_path")
                digests[chosen.class_path] = plugins.source_sha256(cls)
    return digests


def _check(sweep: SweepClasses) -> None:
    with plugins.importable_from(sweep.source_folder):
        if sweep.trainer is not None or sweep.grid.trainer_axes:
            _check_trainer(sweep.trainer or TrainerSection(), sweep.grid.trainer_axes)
        for section, chosen in (("model", sweep.model_class), ("data", sweep.data)):
            if chosen is None:
                continue
            cls = plugins.import_class(chosen.class_path, f"{section}.class_path")
            plugins.check_class(cls, section, f"{section}.class_path")
            names = {name: f"{section}.init_args.{name}" for name in chosen.init_args}
            prefix = INIT_ARG_COLUMN.format(section=section, name="")
            names.update({axis.removeprefix(prefix): f"grid.{axis}"
                          for axis in sweep.grid.init_arg_axes if axis.startswith(prefix)})
            plugins.check_init_args(cls, names, set(names), section)
            if section == "model":
                _check_model(sweep, cls, chosen)


def _check_trainer(section: TrainerSection, axes: dict[str, list]) -> None:
    """The trainer section and the grid's trainer axes, against the Trainer's signature."""
    from greenbench.point.trainer import OWNED, trainer_keywords

    accepted = trainer_keywords()
    given = {**{name: f"trainer.{name}" for name in section.keywords},
             **{name: f"grid.trainer.{name}" for name in axes}}
    for name, field in given.items():
        if name in section.keywords and name in axes:
            raise UserError(f"grid.trainer.{name}: given both in the trainer section and under "
                            "grid; keep one")
        if name in OWNED:
            raise UserError(f"{field}: {OWNED[name]}")
        if name not in accepted:
            close = difflib.get_close_matches(name, [*accepted], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{field}: lightning.pytorch.Trainer has no argument {name!r}{hint}")
    for name, check in (("devices", _devices_problem), ("strategy", _strategy_problem)):
        values = axes.get(name, [section.keywords[name]] if name in section.keywords else [])
        for value in values:
            problem = check(value)
            if problem:
                raise UserError(f"{given[name]}: {problem}")
    if section.logger is True:
        raise UserError("trainer.logger: true would log into each point's own folder, which is "
                        "not kept; give your logger, e.g. {class_path: lightning.pytorch.loggers."
                        "CSVLogger, init_args: {save_dir: logs}}")
    for kind, classes in (("callbacks", section.callback_list), ("logger", section.logger_list)):
        for index, chosen in enumerate(classes):
            many = isinstance(getattr(section, kind), list)
            field = f"trainer.{kind}[{index}]" if many else f"trainer.{kind}"
            cls = plugins.import_class(chosen.class_path, f"{field}.class_path")
            plugins.check_class(cls, kind, f"{field}.class_path")
            names = {name: f"{field}.init_args.{name}" for name in chosen.init_args}
            plugins.check_init_args(cls, names, set(names), field)


def _devices_problem(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    return (f"{value!r} is not a number of devices; give how many a point runs on, a whole "
            "number from 1 (its ranks take the node's first devices)")


def _strategy_problem(value: object) -> str | None:
    from lightning.pytorch.strategies import StrategyRegistry

    known = ["auto", *StrategyRegistry.available_strategies()]
    if not isinstance(value, str) or value.lower() not in known:
        close = difflib.get_close_matches(str(value), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f" (one of {', '.join(known)})"
        return f"{value!r} is not a strategy Lightning knows by name{hint}"
    if value.lower().startswith(LAUNCHES_ITSELF):
        return (f"{value} starts its processes its own way; greenbench starts a point's ranks "
                "itself (ddp, fsdp, deepspeed and their variants)")
    return None


def _check_widths(sweep: SweepClasses, cls: type, chosen: ModelSection) -> None:
    """Every width gives ``width_arg`` a value of its own: a base of 0 or less would make every
    width 1, and two widths rounding to one value would train the same model twice."""
    field = "grid.width" if sweep.grid.width is not None else "width"
    base = plugins.width_base(chosen.init_args, chosen.width_arg, cls)
    if base <= 0:
        raise UserError(f"model.width_arg: {chosen.width_arg} is {base}; width multiplies it, "
                        "so it must be a positive whole number")
    seen: dict[int, float] = {}
    for width in sweep.grid.width or [sweep.width]:
        value = plugins.scaled_init_args(chosen.init_args, chosen.width_arg, width,
                                         cls)[chosen.width_arg]
        if value in seen:
            raise UserError(
                f"{field}: {seen[value]:g} and {width:g} both give {chosen.width_arg}={value} "
                f"({base} x width, rounded, at least 1): the same model twice; choose widths "
                f"{1 / base:.3g} apart or more")
        seen[value] = width


def _check_model(sweep: SweepClasses, cls: type, chosen: ModelSection) -> None:
    if chosen.width_arg is not None:
        axis = f"model.init_args.{chosen.width_arg}"
        if axis in sweep.grid.init_arg_axes:
            raise UserError(f"grid.{axis}: width multiplies {chosen.width_arg}; vary width "
                            "or this init arg, not both")
        plugins.check_width_arg(cls, chosen.width_arg, chosen.init_args.get(chosen.width_arg))
        _check_widths(sweep, cls, chosen)
    problem = plugins.sampler_problem(cls)
    if sweep.quality is None and problem is not None:
        raise UserError(f"quality: give quality.metric, a metric {cls.__qualname__} logs in "
                        f"validation (greenbench cannot score KID: {problem})")
    if sweep.quality is not None and sweep.quality.metric in HIGHER_IS_BETTER and \
            problem is not None:
        raise UserError(f"quality.metric: {sweep.quality.metric} is greenbench's score of "
                        f"generated samples, and {cls.__qualname__} cannot be sampled "
                        f"({problem}); name a metric the module logs")
