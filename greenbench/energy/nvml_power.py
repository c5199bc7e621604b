"""How the GPU meter reads a device's power: the instantaneous field where the driver has it,
the one-second average otherwise, and how far back each reading looks.

On Ampere (except GA100) and newer GPUs, ``nvmlDeviceGetPowerUsage`` returns power averaged over
the last second (nvml.h); integrating it over a window that opens on a power step falls short by
about half a second of that step. ``nvmlDeviceGetFieldValues`` with ``NVML_FI_DEV_POWER_INSTANT``
gives the power now, where the driver supports it (as Zeus reads it). A device whose instant
field cannot be read is read through ``nvmlDeviceGetPowerUsage`` and said to be ``averaged_1s``:
on older GPUs that reading is in fact instantaneous, so the label errs on the strict side (a
window must then be ten seconds long before the cross-check judges it), never the lenient one.
"""

from __future__ import annotations

from typing import Any

INSTANT, AVERAGED_1S = "instant", "averaged_1s"  # the values of ``power_reading``
# How far back a reading looks, in seconds: its averaging period.
AVERAGING_S = {INSTANT: 0.0, AVERAGED_1S: 1.0}

# nvmlValue_t: which member of the union holds the number, by nvmlValueType_t.
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


def instant_power_mw(nv: Any, handle: Any) -> int:
    """The device's power now, in milliwatts, from ``NVML_FI_DEV_POWER_INSTANT``; raises the
    binding's ``NVMLError`` (or AttributeError with an old binding) where it cannot be read."""
    field_id = nv.NVML_FI_DEV_POWER_INSTANT
    scope = getattr(nv, "NVML_POWER_SCOPE_GPU", None)
    field = field_id if scope is None else (field_id, scope)
    value = nv.nvmlDeviceGetFieldValues(handle, [field])[0]
    if value.nvmlReturn != nv.NVML_SUCCESS:
        raise nv.NVMLError(value.nvmlReturn)
    return int(field_number(value))


def field_number(value: Any) -> float:
    """The number an ``nvmlFieldValue_t`` holds, read from the union member its type names."""
    kind = int(getattr(value, "valueType", 1))
    member = _VALUE_MEMBERS[kind] if 0 <= kind < len(_VALUE_MEMBERS) else "uiVal"
    return getattr(value.value, member)


def first_power_reading(nv: Any, handle: Any) -> tuple[str, int]:
    """Which reading this device's power will be sampled with, and its first value (mW): the
    instantaneous field where it reads a positive number, else the averaged reading (which
    raises when power cannot be read at all)."""
    try:
        power_mw = instant_power_mw(nv, handle)
    except Exception:  # NotSupported, an old driver or binding: the averaged reading it is
        power_mw = 0
    if power_mw > 0:  # a GPU never draws 0 W: 0 here means the field is not really there
        return INSTANT, power_mw
    return AVERAGED_1S, int(nv.nvmlDeviceGetPowerUsage(handle))


def read_power_mw(nv: Any, handle: Any, reading: str | None) -> int:
    """The device's power now by the reading chosen for it at start (mW)."""
    if reading == INSTANT:
        return instant_power_mw(nv, handle)
    return int(nv.nvmlDeviceGetPowerUsage(handle))


def combined(readings: list[str | None]) -> str | None:
    """One word for several devices: ``averaged_1s`` if any device is read averaged, else
    ``instant``; None when no device's power is read."""
    known = [reading for reading in readings if reading is not None]
    if not known:
        return None
    return AVERAGED_1S if AVERAGED_1S in known else INSTANT
