"""The NVML side of the GPU meter: one measured device and its state, how devices are named
(CUDA indices, UUIDs, ``CUDA_VISIBLE_DEVICES``, UUID prefixes), and small helpers for NVML's
return values."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from greenbench.energy.meters import NVML_COUNTER, NVML_SAMPLING

DeviceSpec = int | str


@dataclass
class Device:
    """One physical GPU: what it is, which path measures it, and that path's state."""

    requested: list[DeviceSpec]
    label: str  # names the device in fault reasons, details() and telemetry()
    handle: Any
    index: int | None
    uuid: str | None
    name: str | None = None
    power_limit_w: float | None = None
    source: str = NVML_SAMPLING
    counter_error: str | None = None  # why the counter is not used, if it is not
    # How often this device's energy figure changes, and how that was found (set at start).
    period_s: float | None = None
    period_basis: str | None = None
    # Counter path, integer millijoules: energy = banked + (last - base).
    base_mj: int = 0
    last_mj: int = 0
    banked_mj: int = 0
    # Power sampling: the previous good sample (None after a failed one) and the integral. On
    # the sampling path this is the measurement; on the counter path, the cross-check.
    last_t: float | None = None
    last_mw: int = 0
    sampled_j: float = 0.0
    # Counter path: why the cross-check stopped (its integral is then no longer whole).
    cross_check_fault: str | None = None

    @property
    def counted(self) -> bool:
        return self.source == NVML_COUNTER

    @property
    def samples_power(self) -> bool:
        """Sampled: for its measurement, or for the cross-check of its counter."""
        return not self.counted or self.cross_check_fault is None

    def joules(self) -> float:
        if self.counted:
            return (self.banked_mj + self.last_mj - self.base_mj) / 1000
        return self.sampled_j

    def cross_check_j(self) -> float | None:
        """Sampled power integrated beside the counter; None off the counter path or after a
        cross-check fault."""
        if not self.counted or self.cross_check_fault is not None:
            return None
        return self.sampled_j

    def describe(self) -> dict[str, Any]:
        return {
            "requested": list(self.requested),
            "label": self.label,
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "power_limit_w": self.power_limit_w,
            "source": self.source,
            "counter_error": self.counter_error,
            "period_s": self.period_s,
            "period_basis": self.period_basis,
            "cross_check_fault": self.cross_check_fault,
        }


def handle_by_uuid(nv: Any, uuid: str) -> tuple[Any, int | None]:
    """The handle of the device with this UUID, or with the one UUID it is a prefix of (as
    ``CUDA_VISIBLE_DEVICES`` allows), and its NVML index where the search found it."""
    try:
        return nv.nvmlDeviceGetHandleByUUID(uuid), None
    except Exception as exact_error:
        matches = []
        for i in range(try_call(nv.nvmlDeviceGetCount) or 0):
            handle = try_call(nv.nvmlDeviceGetHandleByIndex, i)
            other = None if handle is None else nvml_text(try_call(nv.nvmlDeviceGetUUID, handle))
            if other is not None and other.startswith(uuid):
                matches.append((handle, i))
        if len(matches) == 1:
            return matches[0]
        raise exact_error


def normalise_spec(spec: Any) -> DeviceSpec:
    """An int index for ints, ``"3"`` and ``"cuda:3"``; the stripped string for a UUID."""
    if isinstance(spec, str):
        text = spec.strip()
        digits = text.removeprefix("cuda:")
        if digits.isascii() and digits.isdigit():
            return int(digits)
        if not text:
            raise ValueError("an empty string is not a GPU")
        return text
    if isinstance(spec, bool):
        raise TypeError(f"a GPU is a CUDA index or a UUID, not {spec!r}")
    try:
        index = operator.index(spec)
    except TypeError:
        raise TypeError(f"a GPU is a CUDA index or a UUID, not {spec!r}") from None
    if index < 0:
        raise ValueError(f"a CUDA device index cannot be negative: {index}")
    return index


def parse_visible_devices(raw: str | None) -> list[DeviceSpec] | None:
    """``CUDA_VISIBLE_DEVICES`` as a list of NVML indices and UUIDs; None when it is unset.

    As in CUDA, the list ends at the first entry that is neither (so ``-1`` hides every GPU).
    """
    if raw is None:
        return None
    visible: list[DeviceSpec] = []
    for entry in (part.strip() for part in raw.split(",")):
        if entry.isascii() and entry.isdigit():
            visible.append(int(entry))
        elif entry.startswith(("GPU-", "MIG-")):
            visible.append(entry)
        else:
            break
    return visible


def try_call(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, or None if it raises: for details that are not worth failing on."""
    try:
        return function(*args)
    except Exception:
        return None


def nvml_text(value: Any) -> str | None:
    """NVML strings arrive as bytes or str depending on the binding's version."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def describe_error(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    return text or type(exc).__name__
