"""A 50 Hz log of one GPU's power (averaged and instantaneous) and energy counter, and what it
shows: how far each reading lags the instantaneous power at a step, how often the counter
updates, and what each integrates to over the whole trace and over the first second of a load.

``Tracer.poll()`` takes one row (the caller decides when: a thread at 50 Hz on a GPU, a test on
a fake clock); ``analyse(rows, busy_start, busy_end)`` is a pure function of the rows. A figure
that cannot be had from the rows is None, never a guess.
"""

from __future__ import annotations

import itertools
import statistics
import threading
from collections.abc import Callable, Sequence
from typing import Any

from greenbench.energy.nvml_power import instant_power_mw
from greenbench.energy.nvml_telemetry import smallest_change_interval

TRACE_HZ = 50.0
FIRST_LOAD_S = 1.0  # the window that opens on the load's step, as a short warm-up does
SERIES = ("instant", "averaged", "counter")


class Tracer:
    """Rows of ``t`` (seconds since the tracer began, after the reads), ``read_s`` (the three
    reads together), ``averaged_w`` (``nvmlDeviceGetPowerUsage``), ``instant_w``
    (``NVML_FI_DEV_POWER_INSTANT``) and ``counter_j`` (the energy counter since the first row);
    a reading that fails is None in its row."""

    def __init__(self, nv: Any, handle: Any, clock: Callable[[], float]) -> None:
        self.nv, self.handle, self.clock = nv, handle, clock
        self.began = clock()
        self.rows: list[dict[str, float | None]] = []
        self._first_mj: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        before = self.clock()
        averaged = _try(lambda: self.nv.nvmlDeviceGetPowerUsage(self.handle))
        instant = _try(lambda: instant_power_mw(self.nv, self.handle))
        counter = _try(lambda: self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        after = self.clock()
        if counter is not None and self._first_mj is None:
            self._first_mj = int(counter)
        self.rows.append({
            "t": round(after - self.began, 6), "read_s": round(after - before, 6),
            "averaged_w": None if averaged is None else averaged / 1000,
            "instant_w": None if instant is None else instant / 1000,
            "counter_j": None if counter is None else (int(counter) - self._first_mj) / 1000,
        })

    def now(self) -> float:
        return self.clock() - self.began

    def start(self, hz: float = TRACE_HZ) -> None:
        """Poll every 1/hz seconds in a daemon thread until ``stop()``."""
        def run() -> None:
            while not self._stop.wait(1 / hz):
                self.poll()

        self._thread = threading.Thread(target=run, name="greenbench-trace", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)


def _try(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:
        return None


def analyse(rows: Sequence[dict[str, Any]], busy_start: float, busy_end: float) -> dict[str, Any]:
    """What the trace shows; ``busy_start``/``busy_end``: when the load began and ended (the
    tracer's seconds)."""
    times = [r["t"] for r in rows]
    counter_rows = [r for r in rows if r["counter_j"] is not None]
    period = smallest_change_interval([r["t"] for r in counter_rows],
                                      [r["counter_j"] for r in counter_rows])
    series = {"instant": _points(rows, "instant_w"), "averaged": _points(rows, "averaged_w"),
              "counter": _counter_power(counter_rows)}
    idle_w = _median([w for t, w in series["instant"] if 0.5 <= t <= busy_start - 0.2])
    busy_w = _median([w for t, w in series["instant"] if busy_end - 2.0 <= t <= busy_end - 0.1])
    lags: dict[str, dict[str, float | None]] = {}
    if idle_w is not None and busy_w is not None and busy_w > idle_w:
        level = (idle_w + busy_w) / 2
        edges = {name: (_crossing(points, level, busy_start - 0.5, rising=True),
                        _crossing(points, level, busy_end - 0.5, rising=False))
                 for name, points in series.items()}
        reference = edges["instant"]
        for name, (rise, fall) in edges.items():
            lags[name] = {"rising_s": _difference(rise, reference[0]),
                          "falling_s": _difference(fall, reference[1])}
    return {
        "rows": len(rows),
        "poll_hz": round((len(rows) - 1) / (times[-1] - times[0]), 1) if len(rows) > 1 else None,
        "read_ms": _rounded(_median([1000 * r["read_s"] for r in rows]), 3),
        "idle_w": _rounded(idle_w, 1), "busy_w": _rounded(busy_w, 1),
        "counter_period_s": _rounded(period, 4),
        "lags": lags,
        "whole": _energies(rows, times[0], times[-1]) if rows else None,
        "first_load": _energies(rows, busy_start, busy_start + FIRST_LOAD_S),
    }


def _points(rows: Sequence[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(r["t"], r[key]) for r in rows if r[key] is not None]


def _counter_power(rows: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    """Power from the counter: the energy between two of its changes over the time between the
    rows that saw them, at the time of the second."""
    changes = [rows[0]] if rows else []
    changes += [b for a, b in itertools.pairwise(rows) if b["counter_j"] != a["counter_j"]]
    return [(b["t"], (b["counter_j"] - a["counter_j"]) / (b["t"] - a["t"]))
            for a, b in itertools.pairwise(changes) if b["t"] > a["t"]]


def _crossing(points: Sequence[tuple[float, float]], level: float, after: float,
              rising: bool) -> float | None:
    """When ``points`` first cross ``level`` (upwards or downwards) after ``after``, by linear
    interpolation between the two points around it; None when they do not."""
    for (t0, w0), (t1, w1) in itertools.pairwise(points):
        if t1 < after:
            continue
        below0, below1 = w0 < level, w1 < level
        if (rising and below0 and not below1) or (not rising and not below0 and below1):
            return t0 + (level - w0) / (w1 - w0) * (t1 - t0) if w1 != w0 else t1
    return None


def _energies(rows: Sequence[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Joules from ``start`` to ``end`` by the counter (its rows nearest the edges) and by each
    power reading integrated (trapezoids over the rows inside), with their gaps to the counter."""
    inside = [r for r in rows if start <= r["t"] <= end]
    counted = [r for r in inside if r["counter_j"] is not None]
    counter_j = counted[-1]["counter_j"] - counted[0]["counter_j"] if len(counted) > 1 else None
    found: dict[str, Any] = {"seconds": round(end - start, 3), "counter_j": _rounded(counter_j, 3)}
    for name, key in (("instant", "instant_w"), ("averaged", "averaged_w")):
        points = _points(inside, key)
        joules = sum((w0 + w1) / 2 * (t1 - t0)
                     for (t0, w0), (t1, w1) in itertools.pairwise(points)) if len(points) > 1 \
            else None
        found[f"{name}_j"] = _rounded(joules, 3)
        found[f"{name}_gap"] = (_rounded((joules - counter_j) / counter_j, 4)
                                if joules is not None and counter_j else None)
    return found


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
