"""What NVML says about a GPU beyond its energy: how often its energy counter updates, and the
state it is in now (temperature, SM clock, enforced power limit, performance state).

Nothing here raises for NVML's sake: a value that cannot be read is None. The callers (the GPU
meter) hold their lock while these functions call NVML.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from greenbench.energy.nvml_devices import Device, try_call

# How long start() may spend timing the energy counter, in all, and how long it sleeps between
# two polls (the measured period is good to about one poll).
COUNTER_PROBE_S = 0.5
PROBE_POLL_S = 0.002
# Where the period of a device comes from (``period_basis`` in the meter's details()).
PERIOD_TIMED = "counter_updates"  # the time between two changes of the counter, at start()
PERIOD_BOUND = "probe_bound"  # the counter did not change twice within COUNTER_PROBE_S
PERIOD_SAMPLE_HZ = "sample_hz"  # a sampled device: 1 / sample_hz

_NVML_PSTATES = 16  # P0 (fastest) .. P15; NVML answers 32 when it does not know


def probe_counter_periods(
    nv: Any,
    devices: Sequence[Device],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    bound_s: float = COUNTER_PROBE_S,
    poll_s: float = PROBE_POLL_S,
) -> None:
    """Time the update period of each device's energy counter, as Zeus does: poll all of them
    every ``poll_s`` until each has changed twice, and take the time between its two changes.
    A counter that does not change twice within ``bound_s`` (by ``clock``) gets ``bound_s``
    and the basis ``probe_bound``. The loop also stops after a bounded number of polls, so a
    clock that does not advance cannot hang it. Updates each device's ``last_mj`` to its latest
    good value; failed reads are skipped (the meter's own reads record faults, not this)."""
    changes: list[list[float]] = [[] for _ in devices]
    began = clock()
    max_polls = 2 * math.ceil(bound_s / poll_s) + 10
    for _ in range(max_polls):
        pending = [i for i, dev in enumerate(devices) if dev.period_s is None]
        if not pending or clock() - began >= bound_s:
            break
        sleep(poll_s)
        now = clock()
        for i in pending:
            dev = devices[i]
            value = try_call(nv.nvmlDeviceGetTotalEnergyConsumption, dev.handle)
            if value is None:
                continue
            if int(value) != dev.last_mj:
                changes[i].append(now)
                if len(changes[i]) >= 2 and changes[i][-1] > changes[i][-2]:
                    dev.period_s, dev.period_basis = changes[i][-1] - changes[i][-2], PERIOD_TIMED
            dev.last_mj = int(value)
    for dev in devices:
        if dev.period_s is None:
            dev.period_s, dev.period_basis = bound_s, PERIOD_BOUND


def read_temperature(nv: Any, handle: Any) -> float | None:
    """The GPU die temperature in °C, or None."""
    return _number(try_call(lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)))


def read_telemetry(nv: Any, handle: Any) -> dict[str, Any]:
    """One device's state now: ``temperature_c``, ``sm_clock_mhz``, ``power_limit_w`` (the
    enforced limit) and ``pstate`` (``"P0"`` .. ``"P15"``); each None when it cannot be read."""
    limit_mw = _number(try_call(nv.nvmlDeviceGetEnforcedPowerLimit, handle))
    sm_clock = try_call(lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM))
    return {
        "temperature_c": read_temperature(nv, handle),
        "sm_clock_mhz": _number(sm_clock),
        "power_limit_w": None if limit_mw is None else limit_mw / 1000,
        "pstate": _pstate(try_call(nv.nvmlDeviceGetPerformanceState, handle)),
    }


def _number(value: Any) -> float | None:
    """A finite float from what NVML returned, or None (NVML and its bindings return ints)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _pstate(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _NVML_PSTATES:
        return f"P{value}"
    return None
