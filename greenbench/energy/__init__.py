"""Energy measurement: meters (NVML, CodeCarbon), per-phase windows, and the Lightning callback.

``EnergyCallback`` is imported lazily, so that the meters and the window core can be used (and
the command line can start) without importing Lightning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EnergyCallback"]


def __getattr__(name: str) -> Any:
    if name == "EnergyCallback":
        from greenbench.energy.callback import EnergyCallback

        return EnergyCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
