"""greenbench: what a training choice costs in joules, and what it buys in quality.

The public API is four names: ``EnergyCallback`` (the Lightning callback), ``EnergyMonitor``
(its framework-free core: energy per phase over any meters), ``Meter`` (the interface a meter
implements) and ``__version__``. They are imported on first use, so ``import greenbench`` stays
light (the command line and the readers never load torch or Lightning).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("greenbench")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["EnergyCallback", "EnergyMonitor", "Meter", "__version__"]

_PUBLIC = {
    "EnergyCallback": "greenbench.energy.callback",
    "EnergyMonitor": "greenbench.energy.monitor",
    "Meter": "greenbench.energy.meters",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
