"""Energy per phase of a run, over any set of meters: the framework-free core of the callback.

A run moves through phases: ``idle`` (a baseline before training), ``warmup``, ``train``,
``eval`` and ``generate``. ``switch(phase)`` reads every meter once and credits everything
since the previous switch to the phase that just ended, so each joule lands in exactly one
phase and nothing is counted twice; ``window(phase)`` is the same as a context manager that
returns to the phase it interrupted (an evaluation in the middle of training pauses ``train``).
Meters are read only at these edges, never per batch.

``result()`` gives seven windows, ``idle``, ``warmup``, ``train``, ``eval``, ``generate``,
``fit`` (warmup + train: the training energy) and ``total`` (warmup + train + eval + generate;
idle is a baseline, not part of the run), each with its duration, the joules of every component
and their source, the total, the total net of idle power, the training samples (examples) it
saw and joules per 1,000 of them, whether every number in it was measured by hardware and is
valid, and whether it lasted long enough to be reliable.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from greenbench.energy.meters import COMPONENTS, UNAVAILABLE, Meter, Reading

IDLE, WARMUP, TRAIN, EVAL, GENERATE = "idle", "warmup", "train", "eval", "generate"
FIT, TOTAL = "fit", "total"
PHASES = (IDLE, WARMUP, TRAIN, EVAL, GENERATE)
RUN_PHASES = (WARMUP, TRAIN, EVAL, GENERATE)  # what ``total`` adds up
TRAINING_PHASES = (WARMUP, TRAIN)  # what ``fit`` adds up: training energy; samples count here
SUMS = {FIT: TRAINING_PHASES, TOTAL: RUN_PHASES}  # windows that add up phases
WINDOWS = (*PHASES, *SUMS)  # the windows of a result, in order

# Power within this share of the idle power (or within the idle segments' spread) cannot be told
# from idle: the meters then see time, not work.
IDLE_RESOLUTION = 0.05
NEVER_ENTERED = {TRAIN: "never entered: the run ended in warm-up",
                 EVAL: "never entered: nothing was evaluated inside eval_window()",
                 GENERATE: "never entered: nothing was generated inside generate_window()"}
MIN_WINDOW_PERIODS = 10  # a window is reliable from this many periods of its slowest meter
CROSS_CHECK_LIMIT = 0.05  # counter and sampled power farther apart than this: a warning


@dataclass
class _Tally:
    """What one phase has accumulated over its segments."""

    duration_s: float = 0.0
    joules: dict[str, float] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # component -> why
    samples: int = 0
    segments: int = 0  # how often the phase was entered and left; 0: never
    powers: list[float] = field(default_factory=list)  # watts of each segment, all components
    # Per component, the joules of the second method (Reading.cross_check_j) and of the first
    # over the same segments, where both were read at both edges.
    cross_check: dict[str, list[float]] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)  # at the first and the last edge

    def add(self, start: dict[str, Reading], end: dict[str, Reading], seconds: float) -> None:
        self.duration_s += seconds
        self.segments += 1
        segment_j = 0.0
        for component, last in end.items():
            first = start[component]
            if last.joules is None or first.joules is None:
                continue
            if last.faults != first.faults:
                self.invalid[component] = last.fault or "the meter reported a fault"
            self.joules[component] = self.joules.get(component, 0.0) + last.joules - first.joules
            segment_j += last.joules - first.joules
            if last.cross_check_j is not None and first.cross_check_j is not None:
                pair = self.cross_check.setdefault(component, [0.0, 0.0])
                pair[0] += last.cross_check_j - first.cross_check_j
                pair[1] += last.joules - first.joules
        if seconds > 0:
            self.powers.append(segment_j / seconds)

    def edges(self, start: dict[str, Any] | None, end: dict[str, Any] | None) -> None:
        """Keep the hardware's state at the phase's first and latest edge."""
        if start and "start" not in self.telemetry:
            self.telemetry["start"] = start
        if end:
            self.telemetry["end"] = end

    def merge(self, other: _Tally) -> None:
        self.segments += other.segments
        self.duration_s += other.duration_s
        for component, joules in other.joules.items():
            self.joules[component] = self.joules.get(component, 0.0) + joules
        self.invalid.update(other.invalid)
        self.samples += other.samples
        for component, (checked, counted) in other.cross_check.items():
            pair = self.cross_check.setdefault(component, [0.0, 0.0])
            pair[0] += checked
            pair[1] += counted


class EnergyMonitor:
    def __init__(self, meters: Sequence[Meter], clock: Callable[[], float] = time.perf_counter,
                 min_window_periods: float = MIN_WINDOW_PERIODS):
        self.meters = list(meters)
        self._clock = clock
        self.min_window_periods = min_window_periods
        self._tallies = {phase: _Tally() for phase in PHASES}
        self._phase: str | None = None
        self._readings: dict[str, Reading] = {}
        self._time = 0.0
        self._telemetry: dict[str, Any] = {}
        self._running = False

    @property
    def phase(self) -> str | None:
        return self._phase

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Start every meter; no phase is active until the first ``switch``."""
        for meter in self.meters:
            meter.start()
        self._readings, self._time = self._read(), self._clock()
        self._telemetry = self._read_telemetry()
        self._running = True

    def switch(self, phase: str | None) -> str | None:
        """End the current phase here and begin ``phase`` (None: none); returns the one ended."""
        if phase is not None and phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
        if not self._running:
            raise RuntimeError("the energy monitor is not running")
        readings, now = self._read(), self._clock()
        telemetry = self._read_telemetry()
        previous = self._phase
        if previous is not None:
            self._tallies[previous].add(self._readings, readings, now - self._time)
            self._tallies[previous].edges(self._telemetry, telemetry)
        self._phase, self._readings, self._time = phase, readings, now
        self._telemetry = telemetry
        return previous

    @contextmanager
    def window(self, phase: str) -> Iterator[None]:
        """Run a block as ``phase``, then go back to the phase it interrupted."""
        previous = self.switch(phase)
        try:
            yield
        finally:
            self.switch(previous)

    def count_samples(self, samples: int, phase: str | None = None) -> None:
        """Credit training samples to ``phase`` (warmup or train; default: the current phase,
        when it is one of those)."""
        phase = phase or self._phase
        if phase in TRAINING_PHASES:
            self._tallies[phase].samples += samples

    def stop(self) -> None:
        """End the current phase and stop every meter; idempotent."""
        if not self._running:
            return
        self.switch(None)
        self._running = False
        for meter in self.meters:
            meter.stop()

    def result(self, baseline: dict[str, Any] | None = None) -> dict[str, Any]:
        """The windows so far, and the meters' details, as a JSON-ready dict.

        ``baseline`` is an idle baseline measured elsewhere (another point's ``baseline``
        section, see ``baseline()``): its idle window and power stand in for this monitor's
        own, which is then not measured at all.
        """
        warnings: list[str] = []
        tallies = dict(self._tallies)
        for name, phases in SUMS.items():
            tallies[name] = _Tally()
            for phase in phases:
                tallies[name].merge(self._tallies[phase])
        if baseline is None:
            idle = _summarise(IDLE, self._tallies[IDLE], self._readings, None, warnings,
                              self.min_window_periods)
            idle_power_w = _idle_power(idle, warnings)
            idle_powers = self._tallies[IDLE].powers
        else:
            idle, idle_power_w = baseline["window"], baseline["power_w"]
            idle_powers = baseline["segment_powers_w"]
        windows = {IDLE: idle}
        for name in WINDOWS[1:]:
            windows[name] = _summarise(name, tallies[name], self._readings, idle_power_w, warnings,
                                       self.min_window_periods)
        warnings += [f"{component}: its energy is not this run's alone (scope {reading.scope}): "
                     f"{reading.scope_reason}" for component, reading in self._readings.items()
                     if reading.scope is not None]
        if tallies[WARMUP].segments and not tallies[TRAIN].segments:
            warnings.append(
                "the run never left warm-up: its train window (steady state, J per 1,000 "
                "samples) is empty; training energy is the fit window (warm-up only)")
        warnings += _indistinguishable_from_idle(windows[TRAIN], idle_power_w, idle_powers)
        periods = self.periods()
        for name, window in windows.items():
            if name != IDLE or baseline is None:  # a given baseline was judged where measured
                _judge_reliability(window, periods, self.min_window_periods)
        return {
            "windows": windows,
            "idle_power_w": idle_power_w,
            "warnings": warnings,
            "meters": {type(m).__name__: m.details() for m in self.meters},
        }

    def baseline(self) -> dict[str, Any] | None:
        """This monitor's own idle baseline, in the form ``result(baseline=...)`` takes, or
        None when it has none: the idle window, its power and the power of each segment."""
        idle = _summarise(IDLE, self._tallies[IDLE], self._readings, None, [],
                          self.min_window_periods)
        if idle["total_j"] is None or idle["duration_s"] <= 0:
            return None
        return {"window": idle, "power_w": idle["total_j"] / idle["duration_s"],
                "segment_powers_w": list(self._tallies[IDLE].powers)}

    def periods(self) -> dict[str, tuple[str, float]]:
        """Component -> (meter, period in seconds), for meters whose period is known."""
        periods = {}
        for meter in self.meters:
            if meter.period_s:
                for component in meter.components:
                    periods[component] = (type(meter).__name__, float(meter.period_s))
        return periods

    def _read_telemetry(self) -> dict[str, Any]:
        """Every meter's hardware state now, by meter (meters without any are left out)."""
        found = {}
        for meter in self.meters:
            state = meter.telemetry()
            if state:
                found[type(meter).__name__] = state
        return found

    def _read(self) -> dict[str, Reading]:
        readings = {c: Reading.unavailable("no meter measures it") for c in COMPONENTS}
        for meter in self.meters:
            readings.update(meter.read())
        return readings


def _summarise(
    name: str,
    tally: _Tally,
    latest: dict[str, Reading],
    idle_power_w: float | None,
    warnings: list[str],
    min_periods: float = MIN_WINDOW_PERIODS,
) -> dict[str, Any]:
    components = {}
    for component, reading in latest.items():
        available = reading.joules is not None
        components[component] = {
            "joules": tally.joules.get(component, 0.0) if available else None,
            "source": reading.source,
            "measured": reading.measured,
            "reason": tally.invalid.get(component) or (None if available else reading.fault),
        }
        if reading.scope is not None:  # e.g. shared_device: not the run's alone
            components[component]["scope"] = reading.scope
    available = [c for c, entry in components.items() if entry["source"] != UNAVAILABLE]
    valid = not tally.invalid
    total_j = sum(components[c]["joules"] for c in available) if available and valid else None
    if not tally.segments:  # never entered: empty, not 0 J
        for entry in components.values():
            entry["joules"] = None
        total_j = None
    window = {
        "duration_s": tally.duration_s,
        "components": components,
        "total_j": total_j,
        "net_j": _net(name, total_j, tally.duration_s, idle_power_w, warnings),
        "samples": tally.samples,
        "j_per_1k_samples": (
            1000 * total_j / tally.samples if total_j is not None and tally.samples else None
        ),
        "measured": bool(available) and all(components[c]["measured"] for c in available),
        "valid": valid,
        "reason": "; ".join(f"{c}: {why}" for c, why in sorted(tally.invalid.items()))
        or (None if tally.segments else NEVER_ENTERED.get(name, "the window was never entered")),
    }
    if tally.telemetry:
        window["telemetry"] = tally.telemetry
    for component, (checked, counted) in sorted(tally.cross_check.items()):
        # judged only over a window of several periods of the slower method (one-second
        # averaged power lags a step by half a second); why not, otherwise
        period = latest[component].cross_check_period_s or 0.0
        if counted <= 0 or total_j is None:
            continue
        if tally.duration_s < min_periods * period:
            window.setdefault("cross_check_not_judged", {})[component] = (
                f"{tally.duration_s:.3g} s is shorter than {min_periods:g} periods of the "
                f"power it is checked against ({period:g} s each)")
        else:
            gap = abs(checked - counted) / counted
            window.setdefault("cross_check_rel", {})[component] = round(gap, 5)
            if gap > CROSS_CHECK_LIMIT and name in PHASES:
                warnings.append(
                    f"{name}: {component} energy by its counter and by sampled power differ "
                    f"by {gap:.1%} ({counted:.4g} J against {checked:.4g} J)")
    return window


def _judge_reliability(window: dict[str, Any], periods: dict[str, tuple[str, float]],
                       min_periods: float) -> None:
    """Mark a window ``reliable`` when it is valid and lasts at least ``min_periods`` periods
    of the slowest meter that contributes to it; say why not in ``reliability_reason``."""
    if window["total_j"] is None:
        why = window["reason"] or "no energy figure"
        window.update(reliable=False, reliability_reason=why)
        return
    if not window["valid"]:
        window.update(reliable=False, reliability_reason=f"a meter fault: {window['reason']}")
        return
    contributing = [periods[c] for c, entry in window["components"].items()
                    if entry["joules"] is not None and c in periods]
    if not contributing:
        window.update(reliable=True, reliability_reason=None)
        return
    meter, period = max(contributing, key=lambda item: item[1])
    if window["duration_s"] < min_periods * period:
        window.update(reliable=False, reliability_reason=(
            f"{window['duration_s']:.3g} s is shorter than {min_periods:g} periods of "
            f"{meter} ({period:g} s each)"))
        return
    window.update(reliable=True, reliability_reason=None)




def _indistinguishable_from_idle(
    train: dict[str, Any], idle_w: float | None, idle_powers: Sequence[float]
) -> list[str]:
    """A warning when the train window's power cannot be told from the idle baseline's."""
    if train["total_j"] is None or train["duration_s"] <= 0 or not idle_w:
        return []
    spread = statistics.stdev(idle_powers) if len(idle_powers) > 1 else 0.0
    train_w = train["total_j"] / train["duration_s"]
    if abs(train_w - idle_w) > max(IDLE_RESOLUTION * idle_w, 2 * spread):
        return []
    return [f"the meters cannot tell training from idle here: the train window drew "
            f"{train_w:.3g} W against {idle_w:.3g} W idle (within 5 % or two standard "
            "deviations of the idle segments), so energy here is proportional to time"]


def _idle_power(idle: dict[str, Any], warnings: list[str]) -> float | None:
    if idle["total_j"] is None or idle["duration_s"] <= 0:
        warnings.append("no valid idle baseline: net energy is not computed")
        return None
    return idle["total_j"] / idle["duration_s"]


def _net(
    name: str, total_j: float | None, duration_s: float, idle_power_w: float | None,
    warnings: list[str],
) -> float | None:
    if name == IDLE or total_j is None or idle_power_w is None:
        return None
    net = total_j - idle_power_w * duration_s
    if net < 0:
        warnings.append(
            f"{name}: net energy {net:.3g} J is below zero (the idle baseline draws more than "
            "the window); clamped to 0"
        )
        return 0.0
    return net
