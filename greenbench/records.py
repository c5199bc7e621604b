"""The contract between the processes: what a point is, what running it produces, the record.

The parent turns a sweep into ``RunSpec``s; a point process runs one and returns a
``PointResult``; the parent stores its record; the readers (report, check) read records back.
Each of those stages imports its vocabulary from here, so a name means one thing everywhere.

Every record has the same top-level keys, in this order::

    schema, run_id, status, reason, sweep, config, model, data, timings, train, flops_per_step,
    energy, carbon, quality, quality_curve, generation, executor, node, node_concurrency,
    environment, created_at

``status`` is one of ``STATUSES``; ``reason`` says why when it is not ``ok``. ``model`` is the
class trained (``class_path``, the ``init_args`` it was built with, ``source_sha256`` of its
file), ``data`` the data it trained on (a data module's class likewise, the ``subset`` drawn
for ``data_fraction`` and its ``train_items``). Units live in key names (``trainer_fit_s``,
``samples_seen``, ``total_j``). ``energy`` holds the windows measured by the ``EnergyCallback``
(every figure with its source), ``carbon`` the grams of CO2 of the ``total`` window with the
intensity used, ``quality`` the sample-quality scores at the end and at the best point of
``quality_curve``, ``generation`` what sampling from the trained model cost (the ``generate``
window, per image). ``executor`` (``local`` or ``ray``), ``node`` (the host that ran the point)
and ``node_concurrency`` (how many points shared that host while it ran) say where the energy
was drawn. ``schema`` is raised when a key changes meaning; readers skip records of a schema
they do not know (``schema_problem``). Schema 2 added the ``fit`` and ``generate`` windows,
``generation`` and window reliability, and counts warm-up in training batches. Schema 3 renamed
``timings.train_s`` to ``trainer_fit_s`` and a curve point's ``train_j`` to ``fit_j``
(``RENAMED``). Older records are still read: ``upgraded`` maps their names, and a reader
derives a schema 1 record's ``fit`` as warm-up plus train.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

SCHEMA = 3
READABLE_SCHEMAS = (1, 2, 3)
# Keys renamed at a schema change, as (where, old name, new name); ``upgraded`` maps them, so a
# reader sees every record under the current names.
RENAMED = (
    ("timings", "train_s", "trainer_fit_s"),  # schema 3: the wall time of trainer.fit()
    ("quality_curve", "train_j", "fit_j"),  # schema 3: training energy so far (the fit window)
)

OK, SKIPPED, DIVERGED, FAILED = "ok", "skipped", "diverged", "failed"
STATUSES = (OK, SKIPPED, DIVERGED, FAILED)
NOT_OK = tuple(status for status in STATUSES if status != OK)
# Outcomes that re-running the same point would only repeat; a failed point is run again.
FINAL = frozenset({OK, SKIPPED, DIVERGED})

# What a point trains: the config fields of a record, each a bare column of the results table
# and a field a budget rule may select on. A configuration is every one of them but RUN_FIELDS,
# which are what the runs of one configuration vary over.
POINT_FIELDS = (
    "model", "dataset", "image_size", "precision", "width", "data_fraction", "seed", "repeat",
    "latent_dim", "batch_size", "epochs", "steps", "lr",
)
TEXT_POINT_FIELDS = ("model", "dataset", "precision")  # the config fields that are text
RUN_FIELDS = ("seed", "repeat")
CONFIGURATION_FIELDS = tuple(key for key in POINT_FIELDS if key not in RUN_FIELDS)

# A sweep over a user's classes adds these config fields (hashed into run_id like the rest):
# the init args of the model and data classes as the grid set them (before ``width`` scales
# ``width_arg``), and what quality is: a metric the module logs, or one greenbench computes,
# with its direction. A reference model's config has none of them.
INIT_ARGS_KEYS = {"model": "model_init_args", "data": "data_init_args"}
QUALITY_SETTINGS_KEY = "quality"
WIDTH_ARG_KEY = "width_arg"
# A varied init arg is a column of the results table and a grid axis named like this, and a
# name matches INIT_ARG_NAME (fullmatch) when it is one.
INIT_ARG_COLUMN = "{section}.init_args.{name}"
INIT_ARG_NAME = re.compile(r"(model|data)\.init_args\.([A-Za-z_][A-Za-z0-9_]*)")
# A sweep's trainer section (LightningCLI's ``trainer:``) is the config's ``trainer``, present
# only when the sweep has one, so sweeps without it keep their run_ids; a trainer keyword is a
# grid axis and a results column named like this.
TRAINER_KEY = "trainer"
TRAINER_ARG_COLUMN = "trainer.{name}"
TRAINER_ARG_NAME = re.compile(r"trainer\.([A-Za-z_][A-Za-z0-9_]*)")
# A sweep's ``train.stop_at_target``: the config's ``stop_at_target``, present (true) only when
# set, so sweeps without it keep their run_ids. It changes what is trained: a configuration
# field, a results column, always true or false there.
STOP_AT_TARGET_KEY = "stop_at_target"
# What quality means for a point whose config does not say: the reference models' KID.
DEFAULT_QUALITY = {"metric": "kid", "mode": "min"}
QUALITY_MODES = ("min", "max")

# The scores each point of ``quality_curve`` keeps, besides its epoch, step and fit_j (the
# training energy spent so far: the fit window's joules).
CURVE_SCORES = ("kid", "fid", "nll_nats")
CURVE_FIELDS = ("epoch", "step", "fit_j", *CURVE_SCORES)

# What a generative point samples after training, unless its sweep says otherwise.
GENERATE_DEFAULTS = {"num_images": 1000, "batch_size": 64}

# Direction of each sample-quality score: True when a higher value is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "kid": False,
    "fid": False,
    "precision": True,
    "recall": True,
    "density": True,
    "coverage": True,
    "memorisation": False,
    "elbo_nats": False,
    "nll_nats": False,
    "nll_bits_per_dim": False,
    "recon_mse": False,
}


def quality_settings(config: dict[str, Any]) -> dict[str, Any]:
    """What a point's quality is: its config's ``quality``, or, where it names none (the
    reference models), KID down to ``eval.target_kid``."""
    if QUALITY_SETTINGS_KEY in config:
        return config[QUALITY_SETTINGS_KEY]
    return {**DEFAULT_QUALITY, "target": config["eval"]["target_kid"]}


def higher_is_better(metric: Any, mode: Any) -> bool | None:
    """True when a higher value of ``metric`` is better: greenbench's own scores have the
    direction ``HIGHER_IS_BETTER`` declares, any other metric its ``mode`` (max or min); None
    when neither says.

    >>> higher_is_better("val_acc", "max"), higher_is_better("kid", None)
    (True, False)
    """
    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    if mode in QUALITY_MODES:
        return mode == "max"
    return None


@dataclass(frozen=True)
class RunSpec:
    """One point of a sweep, resolved: everything a point process needs to run it."""

    run_id: str
    sweep: str
    config: dict[str, Any]  # what is trained and evaluated; hashed into run_id
    dataset_root: str | None = None  # where the data lies on this machine; not hashed
    energy: dict[str, Any] = field(default_factory=dict)  # the sweep's energy; not hashed
    carbon: dict[str, Any] = field(default_factory=dict)  # the sweep's carbon; not hashed
    generate: dict[str, Any] = field(default_factory=dict)  # the sweep's generate; not hashed
    import_path: str | None = None  # the sweep file's folder, first on sys.path; not hashed
    varied_args: tuple[str, ...] = ()  # the grid's init-arg and trainer axes, in the label
    # a pilot of ``greenbench plan`` (``{"batches": N or None}``), not a point of the sweep:
    # its record has a ``pilot`` section besides the others and is kept apart; not hashed
    pilot: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> RunSpec:
        return cls(**{**content, "varied_args": tuple(content.get("varied_args", ()))})

    @property
    def label(self) -> str:
        """A short human name: ``gan 32-true w=0.5 f=1 seed=0 #0``."""
        c = self.config
        init_args = "".join(f" {axis.rpartition('.')[2]}={axis_value(c, axis)}"
                            for axis in self.varied_args)
        return (
            f"{c['model'].rpartition('.')[2]} {c['precision']} w={c['width']:g} "
            f"f={c['data_fraction']:g}{init_args} seed={c['seed']} #{c['repeat']}"
        )


def is_argument(name: str) -> bool:
    """Whether ``name`` names an argument axis or column: an init arg of the model or data
    (``model.init_args.lr``) or a trainer keyword (``trainer.gradient_clip_val``)."""
    return bool(INIT_ARG_NAME.fullmatch(name) or TRAINER_ARG_NAME.fullmatch(name))


def axis_value(config: dict[str, Any], axis: str) -> Any:
    """The value a config has on a named grid axis: an init arg (``model.init_args.lr``) or a
    trainer keyword (``trainer.accumulate_grad_batches``)."""
    found = INIT_ARG_NAME.fullmatch(axis)
    if found:
        return config[INIT_ARGS_KEYS[found[1]]][found[2]]
    return config[TRAINER_KEY][TRAINER_ARG_NAME.fullmatch(axis)[1]]


def run_id(config: dict[str, Any]) -> str:
    """A stable id for a resolved config: 12 hex digits of its canonical JSON's SHA-256."""
    canonical = json.dumps(_normalise(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _normalise(value: Any) -> Any:
    """Numbers as values, not spellings: 1 and 1.0 hash the same."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(item) for item in value]
    return value


@dataclass
class PointResult:
    """What running one point produces: its record, and files keyed by path in the sweep folder
    (``images/<run_id>.png``). The parent process stores both; the point process never does."""

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
        "model": None,
        "data": None,
        "timings": {},
        "train": None,
        "flops_per_step": None,
        "energy": None,
        "carbon": None,
        "quality": None,
        "quality_curve": None,
        "generation": None,
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


def failed_record(spec: RunSpec, reason: str, environment: dict[str, Any]) -> dict[str, Any]:
    """The record of a point whose process or task died before it could write its own."""
    return finish(new_record(spec.run_id, spec.sweep, spec.config) | {"environment": environment},
                  FAILED, reason)


def schema_problem(content: Any) -> str | None:
    """Why ``content`` (parsed JSON) is not a record this version reads, or None when it is."""
    if not isinstance(content, dict):
        return f"a JSON {type(content).__name__}, not a record"
    if "schema" not in content:
        return "no schema field: not a greenbench record"
    if content["schema"] not in READABLE_SCHEMAS:
        known = ", ".join(map(str, READABLE_SCHEMAS[:-1])) + f" and {READABLE_SCHEMAS[-1]}"
        return f"schema {content['schema']!r}; this greenbench reads schemas {known}"
    for key, kind in (("run_id", str), ("status", str), ("config", dict)):
        if not isinstance(content.get(key), kind):
            return f"{key} is missing or not a {kind.__name__}"
    if content["status"] not in STATUSES:
        return f"status {content['status']!r} is not one of {', '.join(STATUSES)}"
    return None


def upgraded(record: dict[str, Any]) -> dict[str, Any]:
    """A readable record (``schema_problem`` is None) under the current schema's names: the keys
    of ``RENAMED`` an older record has are renamed; nothing else changes, ``schema`` included.

    >>> upgraded({"schema": 2, "timings": {"train_s": 9.5}})["timings"]
    {'trainer_fit_s': 9.5}
    """
    if record.get("schema") == SCHEMA:
        return record
    record = dict(record)
    for where, old, new in RENAMED:
        part = record.get(where)
        if isinstance(part, dict):
            record[where] = _renamed(part, old, new)
        elif isinstance(part, list):
            record[where] = [_renamed(item, old, new) if isinstance(item, dict) else item
                             for item in part]
    return record


def _renamed(part: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    return {new if key == old else key: value for key, value in part.items()}


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
