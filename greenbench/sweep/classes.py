"""Checking a sweep's classes before any point runs: they import, they are Lightning classes,
they take the init args the sweep gives, and ``width_arg`` is a whole number they take.

Each problem is a ``UserError`` of one line naming the sweep field (``model.class_path``,
``grid.model.init_args.lr``), so that a mistake costs a second, not a sweep of failed points.
The sweep file's folder is put on the import path for the check, as it is in every point
process, so that a ``mypkg/`` or ``mymodels.py`` beside the sweep file imports. Importing a
class imports torch and Lightning, so sweeps of the reference models skip all of this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from greenbench.errors import UserError
from greenbench.models import plugins
from greenbench.records import INIT_ARG_COLUMN
from greenbench.sweep.sections import DataSection, Grid, ModelSection, QualitySection


class SweepClasses(Protocol):
    """What of a ``schema.Sweep`` the checks read."""

    model_class: ModelSection | None
    data: DataSection | None
    quality: QualitySection | None
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


def _check_model(sweep: SweepClasses, cls: type, chosen: ModelSection) -> None:
    if chosen.width_arg is not None:
        axis = f"model.init_args.{chosen.width_arg}"
        if axis in sweep.grid.init_arg_axes:
            raise UserError(f"grid.{axis}: width multiplies {chosen.width_arg}; vary width "
                            "or this init arg, not both")
        plugins.check_width_arg(cls, chosen.width_arg, chosen.init_args.get(chosen.width_arg))
    if sweep.quality is None and not plugins.is_generative(cls):
        raise UserError(f"quality: give quality.metric, a metric {cls.__qualname__} logs in "
                        "validation (it has no sample(n) for greenbench to score KID on)")
