"""The ``nvml_counter`` section: NVML's energy counter against the integral of sampled power, on
an idle window, a short window of matrix products and a long one, each with a fresh
``NvmlMeter`` (whose start times the counter's update period). ``cross_check_rel`` is
|sampled - counter| / counter; whether greenbench would judge it (a window of ten periods of the
power it samples) is said beside it."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.gpu.common import Context, num, pct, rounded, text
from benchmarks.gpu.load import MATMUL_N, MatmulLoad

SAMPLE_HZ = 10.0  # the EnergyCallback's default rate
CROSS_CHECK_WARN = 0.05  # greenbench.energy.monitor warns above this gap
MIN_PERIODS = 10  # greenbench.energy.monitor judges windows of this many periods


def check(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    rows = [window("idle", s.idle_s, None, ctx.device)]  # before any matrix product ran
    load = MatmulLoad()
    load.calibrate()
    rows.append(window("short", s.short_s, load, ctx.device))
    rows.append(window("long", s.long_s, load, ctx.device))
    load.release()
    return {"rows": rows, "sample_hz": SAMPLE_HZ, "matmul_n": MATMUL_N,
            "matmul_dtype": load.dtype_name, "warn_above": CROSS_CHECK_WARN}


def window(name: str, seconds: float, load: MatmulLoad | None,
           device: int | str = 0) -> dict[str, Any]:
    """One window measured by a fresh ``NvmlMeter``: idle (``load`` None) or busy. The device
    is idle at its start: ``MatmulLoad`` synchronises after all it does."""
    from greenbench.energy.nvml import NvmlMeter

    meter = NvmlMeter([device], sample_hz=SAMPLE_HZ)
    meter.start()  # times the counter's update period (up to 0.5 s), then counts
    try:
        details = meter.details()
        if details["unavailable"]:
            raise RuntimeError(f"NVML cannot measure {device}: {details['unavailable']}")
        before, began = meter.read()["gpu"], time.perf_counter()
        if load is None:
            products = 0
            time.sleep(seconds)
        else:
            products = load.run_for(seconds)
        after, duration = meter.read()["gpu"], time.perf_counter() - began
        state = next(iter((meter.telemetry() or {None: {}}).values()))
        dev = meter.details()["devices"][0]  # after the window: a cross-check may have ended
    finally:
        meter.stop()
    counter_j = after.joules - before.joules
    sampled_j = (after.cross_check_j - before.cross_check_j
                 if after.cross_check_j is not None and before.cross_check_j is not None
                 else None)
    faults = after.faults - before.faults
    notes = [f"{faults} meter fault(s): {after.fault}"] if faults else []
    if dev["source"] != "nvml_energy_counter":
        notes.append(f"no energy counter ({dev['counter_error']}): joules are sampled power")
    elif sampled_j is None:
        notes.append(f"no cross-check: {dev['cross_check_fault']}")
    period = after.cross_check_period_s
    if sampled_j is not None and period and duration < MIN_PERIODS * period:
        notes.append(f"too short for greenbench to judge ({MIN_PERIODS} x {period:.2g} s)")
    if dev["scope"]:
        notes.append(f"scope {dev['scope']}: {'; '.join(dev['sharing'])}")
    return {
        "window": name, "seconds": round(duration, 3), "source": after.source,
        "power_reading": dev["power_reading"],
        "counter_j": round(counter_j, 3), "sampled_j": rounded(sampled_j, 3),
        "mean_w": round(counter_j / duration, 1),
        "cross_check_rel": (rounded(abs(sampled_j - counter_j) / counter_j, 5)
                            if sampled_j is not None and counter_j > 0 else None),
        "period_s": rounded(dev["period_s"], 4), "period_basis": dev["period_basis"],
        "matmul_tflops": (round(load.tflops(products, duration), 1)
                          if load is not None else None),
        "sm_clock_mhz": state.get("sm_clock_mhz"), "temperature_c": state.get("temperature_c"),
        "pstate": state.get("pstate"), "faults": faults, "note": "; ".join(notes) or None,
    }


def render(entry: dict[str, Any]) -> list[str]:
    lines = [
        f"`NvmlMeter` on cuda:0, a fresh meter per window (its start times the counter's update "
        f"period); power sampled at {num(entry['sample_hz'], 1)} Hz and integrated beside the "
        f"energy counter. Busy windows run {num(entry['matmul_n'], 0)} x "
        f"{num(entry['matmul_n'], 0)} {entry['matmul_dtype']} matrix products. "
        f"`cross_check_rel` is |sampled - counter| / counter; greenbench warns above "
        f"{pct(entry['warn_above'], 0)}, over windows of at least ten periods of the power it "
        "samples.",
        "",
        "| window | seconds | power reading | counter J | sampled J | mean W | cross_check_rel | "
        "counter period s | period basis | matmul TFLOP/s | SM MHz | temperature C | pstate | "
        "note |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for r in entry["rows"]:
        lines.append(
            f"| {r['window']} | {num(r['seconds'], 3)} | {text(r.get('power_reading'))} | "
            f"{num(r['counter_j'], 3)} | {num(r['sampled_j'], 3)} | {num(r['mean_w'], 1)} | "
            f"{pct(r['cross_check_rel'], 2)} | {num(r['period_s'], 4)} | "
            f"{text(r['period_basis'])} | {num(r['matmul_tflops'], 1)} | "
            f"{num(r['sm_clock_mhz'], 0)} | {num(r['temperature_c'], 0)} | "
            f"{text(r['pstate'])} | {text(r['note'], '')} |")
    return lines
