"""Records into one tidy table, the single loader that ``report`` and ``check`` share, and the
statistics they share (``stats``). A reader: it never imports torch or Lightning."""

from greenbench.results.loader import (
    flatten,
    frame,
    group_keys,
    load,
    load_curves,
    read_records,
)
from greenbench.store import sweep_folders

__all__ = ["flatten", "frame", "group_keys", "load", "load_curves", "read_records",
           "sweep_folders"]
