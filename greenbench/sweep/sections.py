"""The sections of a sweep file, each a strict schema: what every key may hold.

``schema.Sweep`` puts them together; this module holds the parts, the axis types and the grid
(the lists a sweep varies, including any init arg of a class: ``model.init_args.lr``).
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    field_validator,
    model_validator,
)

from greenbench import data, models
from greenbench.records import (
    GENERATE_DEFAULTS,
    HIGHER_IS_BETTER,
    INIT_ARG_NAME,
    QUALITY_MODES,
    TRAINER_ARG_NAME,
)
from greenbench.yamlfile import StrictModel, number

PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
AXES = ("model", "precision", "width", "data_fraction", "seed", "latent_dim", "batch_size")
MAX_POINTS = 100_000  # points of one sweep, repeats included
CLASS_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
# What an init arg may be in a sweep file: plain values, so that a run_id can hash them.
InitArg = bool | int | float | str | None

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


class ClassSection(StrictModel):
    """A class the LightningCLI way: a dotted import path and its constructor's arguments."""

    class_path: str
    init_args: dict[str, InitArg] = Field(default_factory=dict)

    @field_validator("class_path")
    @classmethod
    def _dotted(cls, path: str) -> str:
        if not CLASS_PATH.fullmatch(path):
            raise ValueError(f"{path!r} is not a dotted import path (package.module.Class)")
        return path

    @field_validator("init_args", mode="before")
    @classmethod
    def _plain_values(cls, init_args: Any) -> Any:
        for name, value in (init_args or {}).items() if isinstance(init_args, dict) else ():
            if isinstance(value, (dict, list)):
                raise ValueError(f".{name}: {type(value).__name__}s are not supported as init "
                                 "args; give plain numbers, text, booleans or null")
        return init_args


# What a Trainer keyword may hold in a sweep file: plain values, or a list of them.
TrainerArg = InitArg | list[InitArg]


class TrainerSection(StrictModel):
    """LightningCLI's ``trainer:`` section: any keyword of ``lightning.pytorch.Trainer`` (which
    ones, and those greenbench owns, is checked against the Trainer by ``sweep.classes``), its
    ``callbacks`` as one ``{class_path, init_args}`` or a list of them, and its ``logger`` as
    one, a list, or ``false``/``true``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    callbacks: ClassSection | list[ClassSection] | None = None
    logger: bool | ClassSection | list[ClassSection] | None = None

    @model_validator(mode="after")
    def _plain_keywords(self) -> TrainerSection:
        for name, value in (self.model_extra or {}).items():
            _check_trainer_value(f".{name}", value)
        return self

    @property
    def keywords(self) -> dict[str, Any]:
        """The keywords other than callbacks and logger, as given."""
        return dict(self.model_extra or {})

    @property
    def callback_list(self) -> list[ClassSection]:
        return self.callbacks if isinstance(self.callbacks, list) else \
            [self.callbacks] if self.callbacks is not None else []

    @property
    def logger_list(self) -> list[ClassSection]:
        return self.logger if isinstance(self.logger, list) else \
            [self.logger] if isinstance(self.logger, ClassSection) else []


def _check_trainer_value(field: str, value: Any) -> None:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, (dict, list)):
            raise ValueError(f"{field}: give plain numbers, text, booleans, null or a list of "
                             "them (callbacks and logger take {class_path, init_args})")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{field}: {item} is not a finite number")


class ModelSection(ClassSection):
    width_arg: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None


class DataSection(ClassSection):
    pass


class QualitySection(StrictModel):
    """What a point's quality is: a metric the module logs in validation (or one greenbench
    computes for a module with ``sample(n)``, such as ``kid``), its direction, and the value
    whose first reaching gives ``energy_to_quality_j``."""

    metric: Annotated[str, Field(min_length=1, max_length=100)]
    mode: Literal[QUALITY_MODES] | None = None  # default: the known direction of our metrics
    target: number(float) | None = None

    @model_validator(mode="after")
    def _direction(self) -> QualitySection:
        known = HIGHER_IS_BETTER.get(self.metric)
        if known is not None and self.mode is not None and (self.mode == "max") != known:
            better = "max" if known else "min"
            raise ValueError(f".mode: {self.metric} is greenbench's own metric, better when "
                             f"{'higher' if known else 'lower'}: mode {better} or none")
        if self.mode is None:
            if self.metric not in HIGHER_IS_BETTER:
                raise ValueError(f".mode: give max or min, whichever is better for "
                                 f"{self.metric!r}")
            object.__setattr__(self, "mode", "max" if HIGHER_IS_BETTER[self.metric] else "min")
        return self


def _section_kind(value: Any) -> str:
    return "<name>" if isinstance(value, str) else "<class>"


ModelChoice = Annotated[
    Annotated[ModelName, Tag("<name>")] | Annotated[ModelSection, Tag("<class>")],
    Discriminator(_section_kind),
]


class TrainSection(StrictModel):
    epochs: Count | None = None
    steps: Count | None = None  # training batches
    lr: LearningRate | None = None  # default: the model's own
    # End each point at the first validation (or scoring) whose quality metric reaches the
    # quality target: part of what is trained, so part of the config and the run_id.
    stop_at_target: StrictBool = False

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
    """The axes a sweep varies: the fields below, any init arg of a class
    (``model.init_args.lr``) and any Trainer keyword (``trainer.accumulate_grad_batches``),
    each a list of values."""

    model_config = ConfigDict(extra="allow", frozen=True)

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

    @model_validator(mode="after")
    def _named_axes(self) -> Grid:
        for name, values in (self.model_extra or {}).items():
            trainer = TRAINER_ARG_NAME.fullmatch(name)
            if trainer and trainer[1] in ("callbacks", "logger"):
                raise ValueError(f".{name}: callbacks and logger cannot be grid axes; give them "
                                 "in the trainer section")
            if not INIT_ARG_NAME.fullmatch(name) and not trainer:
                known = [*type(self).model_fields, "model.init_args.<name>",
                         "data.init_args.<name>", "trainer.<keyword>"]
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean '{close[0]}'?" if close else (
                    f"known keys: {', '.join(known)}")
                raise ValueError(f".{name}: unknown key; {hint}")
            if not isinstance(values, list) or not values:
                raise ValueError(f".{name}: should be a list of at least one value")
            seen: set = set()
            for index, value in enumerate(values):
                if not isinstance(value, (bool, int, float, str)) and value is not None:
                    raise ValueError(f".{name}[{index}]: {type(value).__name__}s are not "
                                     "supported as grid values; give plain values")
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f".{name}[{index}]: {value} is not a finite number")
                key = (type(value) is bool, value)
                if key in seen:
                    raise ValueError(f".{name}: {value!r} appears twice; use repeats to run a "
                                     "point again")
                seen.add(key)
        return self

    @property
    def named_axes(self) -> dict[str, list]:
        """The grid's init-arg and trainer axes, ``{"model.init_args.lr": [0.01, 0.05],
        "trainer.accumulate_grad_batches": [1, 4]}``, in file order."""
        return dict(self.model_extra or {})

    @property
    def init_arg_axes(self) -> dict[str, list]:
        """The grid's init-arg axes alone."""
        return {name: values for name, values in self.named_axes.items()
                if INIT_ARG_NAME.fullmatch(name)}

    @property
    def trainer_axes(self) -> dict[str, list]:
        """The grid's trainer axes alone, by keyword: ``{"accumulate_grad_batches": [1, 4]}``."""
        return {TRAINER_ARG_NAME.fullmatch(name)[1]: values
                for name, values in self.named_axes.items() if TRAINER_ARG_NAME.fullmatch(name)}
