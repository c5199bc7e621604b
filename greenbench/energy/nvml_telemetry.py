"""What NVML says about a GPU beyond its energy: how often its energy counter updates, and the
state it is in now (temperature, SM clock, enforced power limit, performance state).

Nothing here raises for NVML's sake: a value that cannot be read is None. The callers (the GPU
meter) hold their lock while these functions call NVML.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from greenbench.energy.meters import NVML_SAMPLING
from greenbench.energy.nvml_devices import Device, try_call

# How long start() may spend timing the energy counter, in all; how long it sleeps between two
# polls (the measured period is good to about one poll); how many changes it waits for (their
# smallest interval is the period, as Zeus times it: one late poll cannot stretch it).
COUNTER_PROBE_S = 0.5
PROBE_POLL_S = 0.002
PROBE_CHANGES = 4
# Where the period of a device comes from (``period_basis`` in the meter's details()).
PERIOD_TIMED = "counter_updates"  # the smallest interval between changes of the counter
PERIOD_FLOOR = "probe_floor"  # the counter changed once within COUNTER_PROBE_S: at least that
PERIOD_SAMPLE_HZ = "sample_hz"  # a sampled device: 1 / sample_hz
PERIOD_AVERAGING = "power_averaging"  # a sampled device read averaged: the averaging period

_NVML_PSTATES = 16  # P0 (fastest) .. P15; NVML answers 32 when it does not know


def smallest_change_interval(times: Sequence[float], values: Sequence[Any]) -> float | None:
    """The smallest interval between two successive changes of ``values``, each read by the
    time in ``times`` (in order, taken as each read returned), or None when they changed fewer
    than twice. Zeus's way of timing a counter that updates every so often, with one guard: a
    change is timed only to within the gap since the read before it, so intervals next to a
    change that a slow read (a gap over twice the usual) found are left out, unless no other
    interval is left."""
    gaps = [b - a for a, b in itertools.pairwise(times)]
    usual = statistics.median(gaps) if gaps else 0.0
    changes = [(t, gap <= 2 * usual) for t, gap, (before, now) in
               zip(times[1:], gaps, itertools.pairwise(values), strict=False) if now != before]
    intervals = [(b - a, sharp_a and sharp_b) for (a, sharp_a), (b, sharp_b)
                 in itertools.pairwise(changes) if b > a]
    sharp = [interval for interval, both in intervals if both]
    if sharp or intervals:
        return min(sharp or [interval for interval, _ in intervals])
    return None


def probe_counter_periods(
    nv: Any,
    devices: Sequence[Device],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    bound_s: float = COUNTER_PROBE_S,
    poll_s: float = PROBE_POLL_S,
) -> None:
    """Time the update period of each device's energy counter: poll all of them every
    ``poll_s`` until each has changed ``PROBE_CHANGES`` times or ``bound_s`` (by ``clock``) has
    passed, and take the smallest interval between two changes.

    A counter that changed only once gets ``bound_s`` as a floor (basis ``probe_floor``: its
    period is at least that). A counter that never changed cannot measure anything: the device
    falls back to sampled power, with the reason in ``counter_error``. The loop also stops after
    a bounded number of polls, so a clock that does not advance cannot hang it. Updates each
    device's ``last_mj`` to its latest good value; failed reads are skipped (the meter's own
    reads record faults, not this)."""
    times: list[list[float]] = [[clock()] for _ in devices]
    values: list[list[int]] = [[dev.last_mj] for dev in devices]
    began = times[0][0] if devices else clock()
    max_polls = 2 * math.ceil(bound_s / poll_s) + 10
    for _ in range(max_polls):
        pending = [i for i in range(len(devices)) if _changes(values[i]) < PROBE_CHANGES]
        if not pending or clock() - began >= bound_s:
            break
        sleep(poll_s)
        for i in pending:
            value = try_call(nv.nvmlDeviceGetTotalEnergyConsumption, devices[i].handle)
            if value is not None:
                times[i].append(clock())  # after the read: when its value was known
                values[i].append(int(value))
                devices[i].last_mj = int(value)
    for dev, seen_at, seen in zip(devices, times, values, strict=True):
        period = smallest_change_interval(seen_at, seen)
        if period is not None:
            dev.period_s, dev.period_basis = period, PERIOD_TIMED
        elif _changes(seen) == 1:
            dev.period_s, dev.period_basis = bound_s, PERIOD_FLOOR
        else:
            dev.source = NVML_SAMPLING
            dev.counter_error = (f"the energy counter did not change in {bound_s:g} s of "
                                 f"polling ({len(seen)} readings)")


def _changes(values: Sequence[int]) -> int:
    return sum(1 for before, now in itertools.pairwise(values) if now != before)


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
