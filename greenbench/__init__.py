"""greenbench: what a training choice costs in joules, and what it buys in quality.

``from greenbench import EnergyCallback`` gives the Lightning callback; it is imported on first
use, so ``import greenbench`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["EnergyCallback", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "EnergyCallback":
        from greenbench.energy.callback import EnergyCallback

        return EnergyCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
