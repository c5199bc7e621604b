"""Sweep files: the schema, its validation, and the expansion into run specs with stable ids.

A sweep file names a study and the axes it varies::

    name: quickstart
    dataset: {name: digits, image_size: 16}
    train: {epochs: 3}
    grid:
      model: [gan, vae]
      precision: [32-true, bf16-mixed]

Each axis is a single value at the top level or a list under ``grid``; the grid's product times
``repeats`` gives the points of the sweep. Every point becomes a ``RunSpec`` whose ``run_id`` is a
hash of what is trained (its resolved ``config``), so the same point has the same id on any
machine, whatever the sweep's name, output folder or executor.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from greenbench import data, models
from greenbench.energy.carbon import resolve_intensity
from greenbench.errors import UserError
from greenbench.records import GENERATE_DEFAULTS, RunSpec, run_id
from greenbench.yamlfile import StrictModel, load_yaml, number, validate

PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
AXES = ("model", "precision", "width", "data_fraction", "seed", "latent_dim", "batch_size")
MAX_POINTS = 100_000  # points of one sweep, repeats included




ModelName = Literal[models.MODELS]
DatasetName = Literal[data.DATASETS]
Precision = Literal[PRECISIONS]
Width = number(float, gt=0, le=16)
Fraction = number(float, gt=0, le=1)
Seed = number(int, ge=0, lt=2**32)
LatentDim = number(int, ge=1, le=1024)
BatchSize = number(int, ge=2, le=65536)  # BatchNorm needs two images per batch
ImageSize = number(int, ge=8, le=64)
Count = number(int, ge=1)
LearningRate = number(float, gt=0)


def _axis(item: Any) -> Any:
    return Annotated[list[item], Field(min_length=1)] | None


class DatasetSection(StrictModel):
    name: DatasetName = "digits"
    image_size: ImageSize | None = None
    root: str | None = None

    @property
    def resolved_image_size(self) -> int:
        return self.image_size or data.DEFAULT_IMAGE_SIZE[self.name]


class TrainSection(StrictModel):
    epochs: Count | None = None
    steps: Count | None = None  # training batches
    lr: LearningRate | None = None  # default: the model's own

    @model_validator(mode="after")
    def _one_budget(self) -> TrainSection:
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give epochs or steps, not both")
        return self


class EvalSection(StrictModel):
    """How samples are scored; part of what a point is, so part of its run_id."""

    num_samples: number(int, ge=10, le=100_000) = 1000
    every_n_epochs: number(int, ge=1) | None = None  # None: score the end of training only
    target_kid: number(float, ge=0) | None = None
    min_extractor_accuracy: number(float, ge=0, le=1) | None = None
    # VAE only: k of the importance-weighted NLL. 16 is within 0.3 nats of k = 64 on digits and
    # keeps scoring a 20-epoch digits VAE under 15 % of its training energy (64 costs ~20 %).
    importance_samples: number(int, ge=1, le=10_000) = 16


class EnergySection(StrictModel):
    """How energy is measured; not part of a point's run_id."""

    idle_seconds: number(float, ge=0, le=600) = 5.0
    # The idle baseline is measured once per sweep and node, and again when older than this;
    # 0 measures it in every point.
    idle_every_s: number(float, ge=0) = 600.0
    warmup_steps: number(int, ge=0) = 10  # training batches
    sample_hz: number(float, gt=0, le=1000) = 10.0
    min_window_periods: number(float, ge=1, le=1000) = 10.0  # for a window to be reliable
    cooldown_s: number(float, ge=0, le=3600) = 0.0  # GPU: wait to cool before the baseline


class GenerateSection(StrictModel):
    """Sampling energy: what each generative point generates after training in its generate
    window; not part of a point's run_id. ``num_images: 0`` measures no generation."""

    num_images: number(int, ge=0, le=1_000_000) = GENERATE_DEFAULTS["num_images"]
    batch_size: number(int, ge=1, le=65536) = GENERATE_DEFAULTS["batch_size"]


class CarbonSection(StrictModel):
    """How joules become grams of CO2; not part of a point's run_id."""

    country_iso_code: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")] | None = None
    intensity_g_per_kwh: number(float, ge=0) | None = None
    pue: number(float, ge=1, le=10) = 1.0

    @model_validator(mode="after")
    def _one_intensity(self) -> CarbonSection:
        if self.country_iso_code is not None and self.intensity_g_per_kwh is not None:
            raise ValueError("give country_iso_code or intensity_g_per_kwh, not both")
        return self


class ExecutorSection(StrictModel):
    """Where points run; not part of a point's run_id."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None  # ray: None starts Ray here; "auto" or host:port joins a cluster
    gpus_per_point: number(float, ge=0) | None = None  # ray: default 1 with GPUs, 0 without
    cpus_per_point: number(float, gt=0) = 1.0
    exclusive_node: bool = False  # ray: one point per node, so CPU and RAM energy is its own
    # local: fork each point from one process that imported torch and Lightning once (warm),
    # or start a new interpreter per point (cold)
    start: Literal["warm", "cold"] = "warm"


class Grid(StrictModel):
    model: _axis(ModelName) = None
    precision: _axis(Precision) = None
    width: _axis(Width) = None
    data_fraction: _axis(Fraction) = None
    seed: _axis(Seed) = None
    latent_dim: _axis(LatentDim) = None
    batch_size: _axis(BatchSize) = None

    @field_validator("*")
    @classmethod
    def _no_repeats(cls, values: list | None) -> list | None:
        # Validated values are already numbers of the axis' type, and 1 == 1.0 in a set: one
        # pass, where comparing each value with those before it took 19 s for 20,000 values.
        seen: set = set()
        for value in values or []:
            if value in seen:
                raise ValueError(f"{value!r} appears twice; use repeats to run a point again")
            seen.add(value)
        return values


class Sweep(StrictModel):
    name: str
    description: str = ""
    output_dir: str = "runs"
    repeats: Count = 1
    dataset: DatasetSection = DatasetSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    energy: EnergySection = EnergySection()
    generate: GenerateSection = GenerateSection()
    carbon: CarbonSection = CarbonSection()
    executor: ExecutorSection = ExecutorSection()
    model: ModelName = "gan"
    precision: Precision = "32-true"
    width: Width = 1.0
    data_fraction: Fraction = 1.0
    seed: Seed = 0
    latent_dim: LatentDim = 32
    batch_size: BatchSize = 64
    grid: Grid = Grid()

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
    def _not_too_many_points(self) -> Sweep:
        problem = too_many_points(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def point_count(self) -> int:
        """How many points the sweep has: the product of its axes' lengths times ``repeats``,
        counted without expanding them."""
        return math.prod(len(self.values(axis)) for axis in AXES) * self.repeats

    def values(self, axis: str) -> list:
        """The values an axis takes: its grid list, or the single top-level value."""
        return getattr(self.grid, axis) or [getattr(self, axis)]

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
    """Read and validate a sweep file, including that its dataset can be read here."""
    path = Path(path)
    sweep = validate(Sweep, load_yaml(path), path)
    _check_data(sweep, path)
    _check_carbon(sweep, path)
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
    axes = {axis: sweep.values(axis) for axis in AXES}
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
                generate=dict(shared["generate"]),
            ))
    return specs


def _config(sweep: Sweep, point: dict[str, Any], repeat: int,
            evaluation: dict[str, Any]) -> dict[str, Any]:
    train = sweep.train
    return {
        "model": point["model"],
        "dataset": sweep.dataset.name,
        "image_size": sweep.dataset.resolved_image_size,
        "precision": point["precision"],
        "width": point["width"],
        "data_fraction": point["data_fraction"],
        "seed": point["seed"],
        "repeat": repeat,
        "latent_dim": point["latent_dim"],
        "batch_size": point["batch_size"],
        "epochs": train.epochs if train.epochs or train.steps else 1,
        "steps": train.steps,
        "lr": train.lr if train.lr is not None else models.DEFAULT_LR[point["model"]],
        "eval": dict(evaluation),
    }
