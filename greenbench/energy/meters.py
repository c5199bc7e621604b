"""The one interface every energy meter implements, and what a reading says.

A meter measures one or more *components* (``gpu``, ``cpu``, ``ram``). Its life is
``start()``, any number of ``read()``, ``stop()``. ``read()`` returns, per component, the
joules accumulated since ``start()`` together with where the number comes from (``source``).
Windows are differences of two readings; nothing here knows about windows.

A meter never raises for a measuring problem once started, and never reports zero as if it had
measured it: a component it cannot measure has ``joules=None`` and source ``unavailable`` (with
the reason in ``fault``), and a problem in the middle of a run (a counter that went backwards, a
driver error) raises the component's ``faults`` count, so any window spanning it is known to be
invalid while the run goes on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

GPU, CPU, RAM = "gpu", "cpu", "ram"
COMPONENTS = (GPU, CPU, RAM)
# Measured for a whole node, not per process or device: one process per node measures them, and
# points that share a node share them.
NODE_COMPONENTS = (CPU, RAM)

# Where a number comes from. The first three read hardware; the others are models.
NVML_COUNTER = "nvml_energy_counter"  # the GPU's cumulative energy counter (Volta and newer)
NVML_SAMPLING = "nvml_power_sampling"  # GPU power sampled in a thread, integrated (trapezoid)
RAPL = "rapl"  # the CPU's RAPL energy counters, as read by CodeCarbon
CODECARBON_CPU_LOAD = "codecarbon_cpu_load_estimate"  # CPU load x TDP curve, CodeCarbon's model
CODECARBON_CPU_CONSTANT = "codecarbon_constant_tdp_estimate"  # a fixed share of TDP
CODECARBON_RAM = "codecarbon_ram_estimate"  # CodeCarbon's RAM power model (per GB installed)
UNAVAILABLE = "unavailable"

MEASURED_SOURCES = frozenset({NVML_COUNTER, NVML_SAMPLING, RAPL})

# A component's ``scope`` when its energy is not the run's alone: a device other work shares (a
# MIG instance's GPU), or a node several points share (``node_shared``, set by the Ray executor).
SHARED_DEVICE = "shared_device"


@dataclass(frozen=True)
class Reading:
    """One component's energy since its meter started."""

    joules: float | None  # None when the component cannot be measured here
    source: str
    faults: int = 0  # problems so far; a window whose two readings differ here is invalid
    fault: str | None = None  # the latest problem, or why the component is unavailable
    # The same energy by a second, independent method (NVML: sampled power integrated beside
    # the energy counter), for a window's cross-check; None where there is no second method.
    cross_check_j: float | None = None
    # The resolution of that second method: a window shorter than a few of these (the monitor's
    # min_window_periods) is too short for the cross-check to judge. None: no cross-check.
    cross_check_period_s: float | None = None
    # None: the energy is the run's own; SHARED_DEVICE: it is drawn by more than this run, why
    # in scope_reason.
    scope: str | None = None
    scope_reason: str | None = None

    @property
    def measured(self) -> bool:
        """True for hardware counters and sampled hardware power, False for estimates."""
        return self.source in MEASURED_SOURCES

    @classmethod
    def unavailable(cls, why: str) -> Reading:
        return cls(None, UNAVAILABLE, 0, why)


class Meter(ABC):
    """Measures cumulative energy of some components; see the module docstring."""

    #: The components this meter reports, e.g. ("gpu",) or ("cpu", "ram").
    components: tuple[str, ...] = ()

    @property
    def period_s(self) -> float | None:
        """How often the meter's numbers change (its measuring interval, a counter's update
        period), once started; None when unknown. A window shorter than a few periods is
        mostly the meter's own granularity, not a measurement."""
        return None

    @abstractmethod
    def start(self) -> None:
        """Begin measuring; joules count from here."""

    @abstractmethod
    def read(self) -> dict[str, Reading]:
        """Cumulative joules per component since ``start()``; never raises."""

    @abstractmethod
    def stop(self) -> None:
        """Stop measuring and release what the meter holds (threads, handles); idempotent."""

    def details(self) -> dict[str, Any]:
        """What the meter ran with and on: devices, drivers, settings. JSON-serialisable."""
        return {}

    def telemetry(self) -> dict[str, Any] | None:
        """The state of the measured hardware now (temperatures, clocks, power limits), read at
        window edges; None when the meter has none. JSON-serialisable, never raises."""
        return None


class NotMeasuredHere(Meter):
    """Components this process leaves to another, with the reason (e.g. another rank)."""

    def __init__(self, components: tuple[str, ...], why: str):
        self.components = components
        self.why = why

    def start(self) -> None:
        pass

    def read(self) -> dict[str, Reading]:
        return {component: Reading.unavailable(self.why) for component in self.components}

    def stop(self) -> None:
        pass
