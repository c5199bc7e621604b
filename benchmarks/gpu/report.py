"""The first-contact report: a pure function of the result dict that ``first_contact.py`` builds
(or reads back from its JSON). It formats what is there and computes nothing: a figure that is
missing is "n/a", a section that did not complete says why."""

from __future__ import annotations

from typing import Any

from benchmarks.gpu.common import num, pct, text

TITLES = {
    "device": "The device",
    "fork": "NVML in a point forked from the warm server",
    "trace": "Power and energy counter, logged across idle, matrix products and idle",
    "validation": "Quick validation, without the quickstart",
}


def render(result: dict[str, Any]) -> str:
    sections = result["sections"]
    name = (sections.get("device") or {}).get("torch_name")
    lines = [
        f"# GPU first contact: {text(name)}",
        "",
        f"`{result['command']}`, started {result['started_at']}: {num(result.get('total_s'), 1)}"
        f" s in all, within a limit of {num(result['limit_s'], 0)} s.",
        "",
        "| section | status | seconds |",
        "|---|---|---:|",
    ]
    for key, title in TITLES.items():
        entry = sections.get(key, {"status": "not run", "reason": "not in the result"})
        lines.append(f"| {title} | {_status(entry)} | {num(entry.get('elapsed_s'), 1)} |")
    for key, title in TITLES.items():
        entry = sections.get(key, {"status": "not run", "reason": "not in the result"})
        lines += ["", f"## {title}", ""]
        if entry["status"] != "ok" and key != "validation":
            lines.append(f"{_status(entry)}.")
            continue
        lines += RENDERERS[key](entry)
    return "\n".join(lines) + "\n"


def _status(entry: dict[str, Any]) -> str:
    if entry["status"] == "ok":
        return "ok"
    return f"{entry['status']}: {entry['reason']}" if entry.get("reason") else entry["status"]


def _device(entry: dict[str, Any]) -> list[str]:
    meter = entry.get("meter") or {}
    dev = (meter.get("devices") or [{}])[0]
    processes = entry.get("compute_processes")
    rows = [
        ("torch: name, UUID, capability",
         f"{text(entry.get('torch_name'))}, {text(entry.get('torch_uuid'))}, "
         f"{text(entry.get('capability'))} ({num(entry.get('count'), 0)} visible, "
         f"CUDA_VISIBLE_DEVICES {text(entry.get('cuda_visible_devices'), 'unset')})"),
        ("NVML: the GPU measured", f"{text(entry.get('nvml_uuid'))} (index "
         f"{num(entry.get('nvml_index'), 0)}), driver {text(entry.get('driver'))}"),
        ("MIG mode (current, pending)", text(entry.get("mig_mode"))),
        ("MIG instance asked for", text(entry.get("mig_uuid"), "none")),
        ("shared (scope shared_device)", "; ".join(entry.get("sharing") or []) or "no"),
        ("compute processes on the GPU", text(processes if isinstance(processes, str)
                                              else len(processes or []))),
        ("energy counter, mJ", text(entry.get("counter_mj"))),
        ("instantaneous power field, mW", text(entry.get("instant_mw"))),
        ("averaged power (nvmlDeviceGetPowerUsage), mW", text(entry.get("averaged_mw"))),
        ("NvmlMeter: source, period, basis",
         f"{text(dev.get('source'))}, {num(dev.get('period_s'), 4)} s, "
         f"{text(dev.get('period_basis'))}" + (f" ({dev['counter_error']})"
                                               if dev.get("counter_error") else "")),
        ("NvmlMeter: power reading, matched by", f"{text(dev.get('power_reading'))}, "
         f"{text(dev.get('matched_by'))}"),
        ("NvmlMeter: unavailable", text(meter.get("unavailable"), "no")),
    ]
    if entry.get("nvml_error"):
        rows.append(("NVML error", text(entry["nvml_error"])))
    return ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]


def _fork(entry: dict[str, Any]) -> list[str]:
    point = entry.get("point") or {}
    lines = [
        f"The warm server's imports took {num(entry.get('import_s'), 2)} s and closed "
        f"{num(entry.get('sessions_closed'), 0)} NVML session(s) (CodeCarbon's import opens "
        f"one); at the fork {text(entry.get('sessions_open_at_fork'))} were open, and CUDA was "
        f"{'initialised (unsafe)' if entry.get('cuda_initialized_at_fork') else 'not initialised'}"
        ".",
        "",
    ]
    if point.get("error"):
        return [*lines, f"The forked point failed: {text(point['error'])}."]
    return [*lines,
            "| forked point | |", "|---|---|",
            f"| source | {text(point.get('source'))} |",
            f"| joules over {num(point.get('seconds'), 1)} s | {num(point.get('joules'), 3)} |",
            f"| mean W | {num(point.get('mean_w'), 1)} |",
            f"| faults | {num(point.get('faults'), 0)} {text(point.get('fault'), '')} |",
            f"| unavailable | {text(point.get('unavailable'), 'no')} |",
            f"| period s, power reading | {num(point.get('period_s'), 4)}, "
            f"{text(point.get('power_reading'))} |"]


def _trace(entry: dict[str, Any]) -> list[str]:
    a = entry.get("analysis") or {}
    lags = a.get("lags") or {}
    lines = [
        f"{num(a.get('rows'), 0)} rows at {num(a.get('poll_hz'), 1)} Hz (target "
        f"{num(entry.get('target_hz'), 0)}; the three reads of a row took "
        f"{num(a.get('read_ms'), 3)} ms, median). Load: {num(entry.get('matmul_n'), 0)} x "
        f"{num(entry.get('matmul_n'), 0)} {text(entry.get('matmul_dtype'))} matrix products from "
        f"{num(entry.get('busy_start_s'), 2)} s to {num(entry.get('busy_end_s'), 2)} s "
        f"({num(entry.get('matmul_tflops'), 1)} TFLOP/s). Instantaneous power: "
        f"{num(a.get('idle_w'), 1)} W idle, {num(a.get('busy_w'), 1)} W busy (medians). The "
        f"energy counter's period (smallest interval between its changes): "
        f"{num(a.get('counter_period_s'), 4)} s.",
        "",
        "Lag behind the instantaneous reading where each crosses half-way between idle and busy:",
        "",
        "| reading | at the load's start, s | at its end, s |",
        "|---|---:|---:|",
    ]
    for name in ("averaged", "counter"):
        lag = lags.get(name) or {}
        lines.append(f"| {name} | {num(lag.get('rising_s'), 3)} | "
                     f"{num(lag.get('falling_s'), 3)} |")
    lines += ["", "Energy by each method, with its gap to the counter:", "",
              "| span | seconds | counter J | instantaneous J | gap | averaged J | gap |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in (("whole", "the whole trace"), ("first_load", "the load's first second")):
        e = a.get(key) or {}
        lines.append(f"| {label} | {num(e.get('seconds'), 2)} | {num(e.get('counter_j'), 2)} | "
                     f"{num(e.get('instant_j'), 2)} | {pct(e.get('instant_gap'), 1)} | "
                     f"{num(e.get('averaged_j'), 2)} | {pct(e.get('averaged_gap'), 1)} |")
    return [*lines, "", "Every row: the `.trace.csv` beside this report."]


def _validation(entry: dict[str, Any]) -> list[str]:
    lines = [f"Status: {_status(entry)}; its report: "
             f"{text(entry.get('report'), 'none written')}.", ""]
    outcomes = entry.get("outcomes") or {}
    if outcomes:
        lines += ["| validation section | status |", "|---|---|"]
        lines += [f"| {name} | {_status(o)} |" for name, o in outcomes.items()]
    return lines


RENDERERS = {"device": _device, "fork": _fork, "trace": _trace, "validation": _validation}
