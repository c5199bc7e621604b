"""Energy per phase of a run, over any set of meters: the framework-free core of the callback.

A run moves through phases: ``idle`` (a baseline before training), ``warmup``, ``train`` and
``eval``. ``switch(phase)`` reads every meter once and credits everything since the previous
switch to the phase that just ended, so each joule lands in exactly one phase and nothing is
counted twice; ``window(phase)`` is the same as a context manager that returns to the phase it
interrupted (an evaluation in the middle of training pauses ``train``). Meters are read only at
these edges, never per batch.

``result()`` gives six windows, ``idle``, ``warmup``, ``train``, ``eval``, ``fit`` (warmup +
train: the training energy) and ``total`` (warmup + train + eval; idle is a baseline, not part
of the run), each with its duration, the
joules of every component and their source, the total, the total net of idle power, the
training samples it saw and joules per 1,000 of them, and whether every number in it was
measured by hardware and is valid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from greenbench.energy.meters import COMPONENTS, UNAVAILABLE, Meter, Reading

IDLE, WARMUP, TRAIN, EVAL = "idle", "warmup", "train", "eval"
FIT, TOTAL = "fit", "total"
PHASES = (IDLE, WARMUP, TRAIN, EVAL)
RUN_PHASES = (WARMUP, TRAIN, EVAL)  # what ``total`` adds up
TRAINING_PHASES = (WARMUP, TRAIN)  # what ``fit`` adds up: training energy; samples count here
SUMS = {FIT: TRAINING_PHASES, TOTAL: RUN_PHASES}  # windows that add up phases
WINDOWS = (*PHASES, *SUMS)  # the windows of a result, in order


@dataclass
class _Tally:
    """What one phase has accumulated over its segments."""

    duration_s: float = 0.0
    joules: dict[str, float] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # component -> why
    samples: int = 0

    def add(self, start: dict[str, Reading], end: dict[str, Reading], seconds: float) -> None:
        self.duration_s += seconds
        for component, last in end.items():
            first = start[component]
            if last.joules is None or first.joules is None:
                continue
            if last.faults != first.faults:
                self.invalid[component] = last.fault or "the meter reported a fault"
            self.joules[component] = self.joules.get(component, 0.0) + last.joules - first.joules

    def merge(self, other: _Tally) -> None:
        self.duration_s += other.duration_s
        for component, joules in other.joules.items():
            self.joules[component] = self.joules.get(component, 0.0) + joules
        self.invalid.update(other.invalid)
        self.samples += other.samples


class EnergyMonitor:
    def __init__(self, meters: Sequence[Meter], clock: Callable[[], float] = time.perf_counter):
        self.meters = list(meters)
        self._clock = clock
        self._tallies = {phase: _Tally() for phase in PHASES}
        self._phase: str | None = None
        self._readings: dict[str, Reading] = {}
        self._time = 0.0
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
        self._running = True

    def switch(self, phase: str | None) -> str | None:
        """End the current phase here and begin ``phase`` (None: none); returns the one ended."""
        if phase is not None and phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
        if not self._running:
            raise RuntimeError("the energy monitor is not running")
        readings, now = self._read(), self._clock()
        previous = self._phase
        if previous is not None:
            self._tallies[previous].add(self._readings, readings, now - self._time)
        self._phase, self._readings, self._time = phase, readings, now
        return previous

    @contextmanager
    def window(self, phase: str) -> Iterator[None]:
        """Run a block as ``phase``, then go back to the phase it interrupted."""
        previous = self.switch(phase)
        try:
            yield
        finally:
            self.switch(previous)

    def count_samples(self, samples: int) -> None:
        """Credit training samples to the current phase (warmup or train)."""
        if self._phase in TRAINING_PHASES:
            self._tallies[self._phase].samples += samples

    def stop(self) -> None:
        """End the current phase and stop every meter; idempotent."""
        if not self._running:
            return
        self.switch(None)
        self._running = False
        for meter in self.meters:
            meter.stop()

    def result(self) -> dict[str, Any]:
        """The windows so far, and the meters' details, as a JSON-ready dict."""
        warnings: list[str] = []
        tallies = dict(self._tallies)
        for name, phases in SUMS.items():
            tallies[name] = _Tally()
            for phase in phases:
                tallies[name].merge(self._tallies[phase])
        idle = _summarise(IDLE, self._tallies[IDLE], self._readings, None, warnings)
        idle_power_w = _idle_power(idle, warnings)
        windows = {IDLE: idle}
        for name in WINDOWS[1:]:
            windows[name] = _summarise(name, tallies[name], self._readings, idle_power_w, warnings)
        return {
            "windows": windows,
            "idle_power_w": idle_power_w,
            "warnings": warnings,
            "meters": {type(m).__name__: m.details() for m in self.meters},
        }

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
    available = [c for c, entry in components.items() if entry["source"] != UNAVAILABLE]
    valid = not tally.invalid
    total_j = sum(components[c]["joules"] for c in available) if available and valid else None
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
        "reason": "; ".join(f"{c}: {why}" for c, why in sorted(tally.invalid.items())) or None,
    }
    return window


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
