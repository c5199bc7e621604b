"""Records into one tidy table, the single loader that ``report`` and ``check`` share, what a
run's quality is (``quality``), one type per column (``repair``), the statistics they share
(``stats``), and what ``greenbench plan`` predicted (``plans``). A reader: it never imports
torch or Lightning."""

from greenbench.results.loader import (
    argument_columns,
    configuration_columns,
    flatten,
    frame,
    group_keys,
    load,
    load_curves,
    quality_columns,
    read_records,
)
from greenbench.results.plans import predictions, read_plan
from greenbench.store import sweep_folders

__all__ = [
    "argument_columns",
    "configuration_columns",
    "flatten",
    "frame",
    "group_keys",
    "load",
    "load_curves",
    "predictions",
    "quality_columns",
    "read_plan",
    "read_records",
    "sweep_folders",
]
