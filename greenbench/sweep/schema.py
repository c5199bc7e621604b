"""Sweep files: the schema, its validation, and the expansion into run specs with stable ids.

A sweep file names a study and the axes it varies::

    name: quickstart
    dataset: {name: digits, image_size: 16}
    train: {epochs: 3}
    grid:
      model: [gan, vae]
      precision: [32-true, bf16-mixed]

Each axis is a single value at the top level or a list under ``grid``; the grid's product times
``repeats`` gives the points of the sweep. ``model`` is a reference model's name or a class,
``{class_path, init_args, width_arg}``, and ``data`` a LightningDataModule class in place of a
built-in ``dataset``; any of their init args may be a grid axis (``model.init_args.lr``).
Every point becomes a ``RunSpec`` whose ``run_id`` is a
hash of what is trained (its resolved ``config``), so the same point has the same id on any
machine, whatever the sweep's name, output folder or executor.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import PrivateAttr, field_validator, model_validator

from greenbench import data, models
from greenbench.energy.carbon import resolve_intensity
from greenbench.errors import UserError
from greenbench.records import (
    DEFAULT_QUALITY,
    HIGHER_IS_BETTER,
    INIT_ARG_COLUMN,
    INIT_ARGS_KEYS,
    QUALITY_SETTINGS_KEY,
    STOP_AT_TARGET_KEY,
    TRAINER_ARG_NAME,
    TRAINER_KEY,
    WIDTH_ARG_KEY,
    RunSpec,
    quality_settings,
    run_id,
)
from greenbench.sweep import classes
from greenbench.sweep.sections import (
    AXES,
    MAX_POINTS,
    BatchSize,
    CarbonSection,
    Count,
    DataSection,
    DatasetSection,
    EnergySection,
    EvalSection,
    ExecutorSection,
    Fraction,
    GenerateSection,
    Grid,
    LatentDim,
    ModelChoice,
    ModelSection,
    Precision,
    QualitySection,
    Seed,
    TrainerSection,
    TrainSection,
    Width,
)
from greenbench.yamlfile import StrictModel, load_yaml, validate

__all__ = ["MAX_POINTS", "ExecutorSection", "ModelSection", "Sweep", "expand", "load_sweep"]


class Sweep(StrictModel):
    name: str
    description: str = ""
    output_dir: str = "runs"
    repeats: Count = 1
    dataset: DatasetSection = DatasetSection()
    data: DataSection | None = None  # a LightningDataModule in place of a built-in dataset
    quality: QualitySection | None = None  # default: KID, for the reference models
    trainer: TrainerSection | None = None  # LightningCLI's trainer section
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    energy: EnergySection = EnergySection()
    generate: GenerateSection = GenerateSection()
    carbon: CarbonSection = CarbonSection()
    executor: ExecutorSection = ExecutorSection()
    model: ModelChoice = "gan"
    precision: Precision = "32-true"
    width: Width = 1.0
    data_fraction: Fraction = 1.0
    seed: Seed = 0
    latent_dim: LatentDim = 32
    batch_size: BatchSize = 64
    grid: Grid = Grid()
    # The folder of the sweep file, set by load_sweep: a sweep's classes import from there.
    _source_folder: str | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", name) or set(name) == {"."}:
            raise ValueError(
                f"{name!r} must be 1 to 100 letters, digits, '.', '_' or '-' "
                "(it names a folder under output_dir)"
            )
        return name

    @model_validator(mode="after")
    def _axis_given_once(self) -> Sweep:
        for axis in AXES:
            if axis in self.model_fields_set and getattr(self.grid, axis) is not None:
                raise ValueError(f"{axis}: given both at top level and under grid; keep one")
        return self

    @model_validator(mode="after")
    def _classes_fit_the_sweep(self) -> Sweep:
        problem = _class_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _a_target_to_stop_at(self) -> Sweep:
        problem = _stop_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _not_too_many_points(self) -> Sweep:
        problem = too_many_points(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def point_count(self) -> int:
        """How many points the sweep has: the product of its axes' lengths times ``repeats``,
        counted without expanding them."""
        return math.prod(len(values) for values in self.axes().values()) * self.repeats

    def values(self, axis: str) -> list:
        """The values an axis takes: its grid list, or the single top-level value."""
        return getattr(self.grid, axis) or [getattr(self, axis)]

    def axes(self) -> dict[str, list]:
        """Every axis with its values: ``AXES``, then the grid's init-arg and trainer axes."""
        return {**{axis: self.values(axis) for axis in AXES}, **self.grid.named_axes}

    @property
    def source_folder(self) -> str | None:
        """The folder of the sweep file (None for a sweep not read from a file)."""
        return self._source_folder

    @property
    def model_class(self) -> ModelSection | None:
        """The model as a class, or None for a reference model named by its shorthand."""
        return self.model if isinstance(self.model, ModelSection) else None

    @property
    def directory(self) -> Path:
        """Where this sweep's results go: ``<output_dir>/<name>``."""
        return Path(self.output_dir).expanduser() / self.name

    def resolved_yaml(self) -> str:
        """The sweep with every default filled in, as YAML that loads back to the same sweep."""
        content = self.model_dump(mode="json", exclude_none=True)
        for axis in AXES:
            if getattr(self.grid, axis) is not None:
                del content[axis]
        return yaml.safe_dump(content, sort_keys=False)


def _trainer(sweep: Sweep, point: dict[str, Any]) -> dict[str, Any]:
    """The trainer section of one point: the section's keywords, this point's values of the
    trainer axes, and its callbacks and logger as given (omitted when not given)."""
    section = sweep.trainer or TrainerSection()
    trainer = {**section.keywords, **{name.split(".", 1)[1]: value for name, value
                                      in point.items() if TRAINER_ARG_NAME.fullmatch(name)}}
    dumped = section.model_dump(mode="json", exclude_none=True)
    for key in ("callbacks", "logger"):
        if key in dumped:
            trainer[key] = dumped[key]
    return trainer


def _class_problem(sweep: Sweep) -> str | None:
    """What in ``sweep`` does not fit its classes, as ``field: what``; None when all fits.
    (Whether the classes import and take these arguments is checked by ``sweep.classes``.)"""
    given = sweep.model_fields_set
    if sweep.data is not None and "dataset" in given:
        return "data: give a built-in dataset or a data module (data), not both"
    model_class = sweep.model_class
    for name in sweep.grid.init_arg_axes:
        section = name.split(".", 1)[0]
        if section == "model" and model_class is None:
            return (f"grid.{name}: the reference models take no init_args; give model as "
                    "{class_path, init_args}")
        if section == "data" and sweep.data is None:
            return f"grid.{name}: the sweep has no data section whose init_args it could set"
    if model_class is None:
        if sweep.data is not None:
            return ("data: the reference models train on a built-in dataset; to train one on "
                    "a data module, give model as {class_path: greenbench.models.gan.GAN, "
                    "init_args: {...}}")
        return None
    if model_class.width_arg is None and any(w != 1 for w in sweep.values("width")):
        return ("width: a class model needs model.width_arg, the init arg that width "
                "multiplies")
    if "latent_dim" in given or sweep.grid.latent_dim is not None:
        return "latent_dim: set by the reference models only; give it in model.init_args"
    if sweep.train.lr is not None:
        return "train.lr: set by the reference models only; give it in model.init_args"
    if sweep.data is not None and ("batch_size" in given or sweep.grid.batch_size is not None):
        return "batch_size: a data module sets its own; give it in data.init_args"
    return None


def _stop_problem(sweep: Sweep) -> str | None:
    """Why ``train.stop_at_target`` cannot work in ``sweep``; None when it can (or is off)."""
    if not sweep.train.stop_at_target:
        return None
    quality = sweep.quality
    metric = quality.metric if quality is not None else DEFAULT_QUALITY["metric"]
    target = quality.target if quality is not None else sweep.eval.target_kid
    if target is None:
        where = "quality.target" if quality is not None else \
            "eval.target_kid (or a quality section with metric and target)"
        return f"train.stop_at_target: needs a target to stop at; set {where}"
    if metric in HIGHER_IS_BETTER and sweep.eval.every_n_epochs is None:
        return (f"train.stop_at_target: {metric} is scored from samples at the end of training "
                "only; set eval.every_n_epochs for it to be scored, and the target checked, "
                "along training")
    return None


def too_many_points(sweep: Sweep) -> str | None:
    """Why ``sweep`` has more points than ``MAX_POINTS``, as ``field: what``; None if it has not.
    A sweep that large is a mistake or a job for several sweeps: listing it alone takes minutes
    and gigabytes, and running it takes years."""
    total = sweep.point_count
    if total <= MAX_POINTS:
        return None
    combinations = total // sweep.repeats
    if combinations == 1:
        count = f"repeats: {total:,} points"
    elif sweep.repeats == 1:
        count = f"grid: {total:,} points"
    else:
        count = f"grid: {combinations:,} grid points x {sweep.repeats:,} repeats = {total:,} points"
    return f"{count} is more than the {MAX_POINTS:,} a sweep may have; split it into smaller sweeps"


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file, including that its dataset can be read here and that
    its classes import and take the init args it gives (``sweep.classes``)."""
    path = Path(path)
    sweep = validate(Sweep, load_yaml(path), path)
    sweep._source_folder = str(path.resolve().parent)
    if sweep.data is None:
        _check_data(sweep, path)
    _check_carbon(sweep, path)
    classes.check(sweep, path)
    return sweep


def _check_carbon(sweep: Sweep, path: Path) -> None:
    if sweep.carbon.country_iso_code is not None:
        try:
            resolve_intensity(**sweep.carbon.model_dump())
        except UserError as e:
            raise UserError(f"{path}: {e}") from None


def _check_data(sweep: Sweep, path: Path) -> None:
    try:
        info = data.inspect_dataset(sweep.dataset.name, _root(sweep))
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    for fraction, batch_size in itertools.product(
        sweep.values("data_fraction"), sweep.values("batch_size")
    ):
        images = data.subset_size(info.train_size, fraction)
        if images < batch_size:
            raise UserError(
                f"{path}: data_fraction: {fraction:g} leaves {images} of the "
                f"{info.train_size} {info.name} training images, fewer than "
                f"batch_size {batch_size}"
            )


def _root(sweep: Sweep) -> str | None:
    root = sweep.dataset.root
    return str(Path(root).expanduser().resolve()) if root is not None else None


def expand(sweep: Sweep) -> list[RunSpec]:
    """Every point of the sweep: the grid's product in axis order, each repeated.

    Refuses (``UserError``) a sweep of more than ``MAX_POINTS`` points before building any, also
    one whose ``repeats`` was raised after validation (``calibrate --repeats``)."""
    problem = too_many_points(sweep)
    if problem:
        raise UserError(f"sweep {sweep.name!r}: {problem}")
    axes = sweep.axes()
    # What every point shares is dumped once; each spec gets its own (flat) copies.
    shared = {"root": _root(sweep), "energy": sweep.energy.model_dump(),
              "carbon": sweep.carbon.model_dump(), "eval": sweep.eval.model_dump(),
              "generate": sweep.generate.model_dump()}
    specs = []
    for combination in itertools.product(*axes.values()):
        point = dict(zip(axes, combination, strict=True))
        for repeat in range(sweep.repeats):
            config = _config(sweep, point, repeat, shared["eval"])
            specs.append(RunSpec(
                run_id(config), sweep.name, config, shared["root"],
                energy=dict(shared["energy"]), carbon=dict(shared["carbon"]),
                generate=dict(shared["generate"]), import_path=sweep.source_folder,
                varied_args=tuple(sweep.grid.named_axes),
            ))
    return specs


def _config(sweep: Sweep, point: dict[str, Any], repeat: int,
            evaluation: dict[str, Any]) -> dict[str, Any]:
    """What one point trains and how it is scored: hashed into its run_id. A reference model's
    config has the fields of ``POINT_FIELDS`` and ``eval``; a class model's adds its init args,
    ``width_arg`` and ``quality`` (``records.INIT_ARGS_KEYS``)."""
    train, model_class = sweep.train, sweep.model_class
    reference = model_class is None
    config = {
        "model": point["model"] if reference else model_class.class_path,
        "dataset": sweep.dataset.name if sweep.data is None else sweep.data.class_path,
        "image_size": sweep.dataset.resolved_image_size if sweep.data is None else None,
        "precision": point["precision"],
        "width": point["width"],
        "data_fraction": point["data_fraction"],
        "seed": point["seed"],
        "repeat": repeat,
        "latent_dim": point["latent_dim"] if reference else None,
        "batch_size": point["batch_size"] if sweep.data is None else None,
        "epochs": train.epochs if train.epochs or train.steps else 1,
        "steps": train.steps,
        "lr": (train.lr if train.lr is not None else models.DEFAULT_LR[point["model"]])
        if reference else None,
        "eval": dict(evaluation),
    }
    for section, key in INIT_ARGS_KEYS.items():
        chosen = model_class if section == "model" else sweep.data
        if chosen is not None:
            config[key] = {**chosen.init_args, **{
                name.split(".", 2)[2]: value for name, value in point.items()
                if name.startswith(INIT_ARG_COLUMN.format(section=section, name=""))}}
    if not reference:
        config[WIDTH_ARG_KEY] = model_class.width_arg
    if sweep.trainer is not None or sweep.grid.trainer_axes:
        config[TRAINER_KEY] = _trainer(sweep, point)
    if train.stop_at_target:  # absent when off, so that sweeps without it keep their run_ids
        config[STOP_AT_TARGET_KEY] = True
    if sweep.quality is not None:
        config[QUALITY_SETTINGS_KEY] = sweep.quality.model_dump()
    elif not reference:  # a class that can sample, scored by KID as the reference models are
        config[QUALITY_SETTINGS_KEY] = quality_settings(config)
    return config
