"""What a run's quality is: the metric its sweep named, which way is better, and the columns of
the results table that hold it.

A reference model's quality is KID (``DEFAULT_QUALITY``: lower is better). A user's
LightningModule names a metric it logs (the config's ``quality``: ``metric``, ``mode``,
``target``), and its record's ``quality`` says the same (``metric``, ``mode``); a record that
says neither is a reference model's, from before the fields existed. ``quality.final`` and
``quality.best`` hold the metric under its own name.

Columns: the metric's final value is a column named like the metric (``val_acc``) and its
value at the best scored epoch is ``best_<name>`` (``best_val_acc``). greenbench's own scores
keep the columns they have (``kid`` and ``best_kid``; the sample ``precision`` is
``sample_precision``). A name that already means something else in the results table
(``batches``, ``epoch``, ``quality_mode``, an ``eval_`` setting) gets ``quality_`` before it,
as often as it takes to be free: the metric ``batches`` is ``quality_batches`` and
``best_quality_batches``.

Direction: greenbench's own scores have the one ``HIGHER_IS_BETTER`` declares, whatever a
record says; any other metric has its ``mode`` (``max``: higher is better; ``min``: lower).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from greenbench.records import (
    DEFAULT_QUALITY,
    HIGHER_IS_BETTER,
    QUALITY_MODES,
    QUALITY_SETTINGS_KEY,
    higher_is_better,
)

SCORE_COLUMNS = {  # record key -> column
    "kid": "kid", "kid_std": "kid_std", "fid": "fid", "precision": "sample_precision",
    "recall": "sample_recall", "density": "density", "coverage": "coverage",
    "memorisation": "memorisation", "elbo_nats": "elbo_nats", "nll_nats": "nll_nats",
    "nll_bits_per_dim": "nll_bits_per_dim", "recon_mse": "recon_mse",
}
DEFAULT_METRIC = DEFAULT_QUALITY["metric"]
PREFIX = "quality_"  # before a metric's name that is already another column's
# Column names that belong to others whatever follows: eval settings and init args.
TAKEN_PREFIXES = ("eval_", "model.init_args.", "data.init_args.", "trainer.")


@dataclass(frozen=True)
class Quality:
    """A record's quality metric: its name, direction (None when it has none that greenbench
    can tell), the mode as the record wrote it, and its target."""

    metric: str
    mode: str | None
    written_mode: Any
    target: Any
    logged: bool = False  # a module's own metric named like one of greenbench's scores


def quality_of(record: dict[str, Any]) -> Quality:
    """The quality metric of a record: what its ``quality`` says, else its config's, else the
    reference models' KID."""
    measured = _dict(record.get("quality"))
    declared = _dict(_dict(record.get("config")).get(QUALITY_SETTINGS_KEY))
    metric = measured.get("metric") or declared.get("metric") or DEFAULT_METRIC
    metric = metric if isinstance(metric, str) else str(metric)
    written = measured.get("mode", declared.get("mode"))
    if metric in HIGHER_IS_BETTER:
        mode: str | None = "max" if HIGHER_IS_BETTER[metric] else "min"
    elif written in QUALITY_MODES:
        mode = written
    else:
        mode = None
    logged = metric in SCORE_COLUMNS and f"sample_{metric}" in _dict(measured.get("final"))
    return Quality(metric, mode, written, measured.get("target", declared.get("target")),
                   logged)


def columns(metric: str, taken: Collection[str], logged: bool = False) -> tuple[str, str]:
    """The columns of ``metric``'s final and best values, given the names ``taken`` by the
    other columns of the results table; a module's ``logged`` metric named like one of
    greenbench's scores has columns of its own."""
    if metric in SCORE_COLUMNS and not logged:
        return SCORE_COLUMNS[metric], f"best_{SCORE_COLUMNS[metric]}"
    name = metric
    while name in taken or f"best_{name}" in taken or name.startswith(TAKEN_PREFIXES):
        name = PREFIX + name
    return name, f"best_{name}"


def direction(metric: Any, mode: Any) -> str:
    """``higher is better``, ``lower is better``, or that it is not known."""
    higher = higher_is_better(metric, mode)
    if higher is None:
        return "no direction known"
    return "higher is better" if higher else "lower is better"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
