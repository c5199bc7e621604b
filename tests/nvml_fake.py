"""A fake of the NVML library at the hardware boundary (there is no GPU here), with the habits of
real hardware, so that code which assumes kinder behaviour fails its tests:

* **Power is a function of time** on the fake's clock: a constant ``power_mw`` that a test may
  change (a step at the clock's time then) or a list of steps. The **energy counter** integrates
  it but updates only every ``counter_update_s``, at ``counter_offset_s`` from t = 0, as a real
  counter does; ``energy_mj`` is a scripted offset added on top (``None``: no counter, as before
  Volta). A counter with ``counter_update_s=None`` never moves.
* **Averaged and instantaneous power.** ``nvmlDeviceGetPowerUsage`` averages power over the last
  ``averaged_power_s`` (one second on Ampere and newer; None: instantaneous, as on older GPUs),
  while ``nvmlDeviceGetFieldValues`` with ``NVML_FI_DEV_POWER_INSTANT`` reads it now where
  ``instant_field`` is set (else that field answers Not Supported).
* **MIG.** A GPU given ``mig_instances`` has MIG mode on; each instance is a MIG device handle,
  found by its ``MIG-`` UUID, with no energy counter or power of its own
  (``nvmlDeviceGetDeviceHandleFromMigDeviceHandle`` leads to its GPU).
* **Compute processes**: each GPU and MIG instance lists the pids in its ``processes`` (a GPU's
  handle lists its instances' too), or raises its ``processes_error``.
* **What was asked of which device**: ``device_calls`` counts calls by (UUID, function).
* **Calls take time**: each call advances the clock by ``call_s``, plus any delay queued for that
  function in ``slow``.
* **The session**: ``nvmlInit``/``nvmlShutdown`` count references in the binding's
  ``_nvmlLib_refcount``, as nvidia-ml-py does; a device call without a session fails
  (Uninitialized), and one made in a process other than the one that opened the session (a
  session inherited through fork) fails with Unknown Error. What real NVML does then is
  undefined; failing loudly is the kindest form of it.

``FakeNvml.install(monkeypatch)`` puts the fake's functions into the real ``pynvml`` module of
this process; ``tests/fake_pynvml/pynvml.py`` is the same fake as a module, for processes a test
starts. Real pynvml exception classes are raised throughout.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pynvml

UUIDS = ("GPU-aaaa1111-0000", "GPU-bbbb2222-0000", "GPU-cccc3333-0000")


def nvml_error(code: int) -> pynvml.NVMLError:
    """The real pynvml exception for an NVML return code (NVMLError maps it to its subclass)."""
    return pynvml.NVMLError(code)


class FakeClock:
    """Seconds the test sets; ``sleep`` (and a call that takes time) advances them."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t
        self.sleeps = 0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.t += seconds

    def advance(self, seconds: float) -> None:
        self.t += seconds


class RealClock:
    """The monotonic clock from the moment it was made, for fakes read by real threads."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    @property
    def t(self) -> float:
        return time.monotonic() - self.t0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def advance(self, seconds: float) -> None:
        time.sleep(seconds)


class FakeMig:
    """A MIG instance of a FakeGpu: its own UUID and name, its GPU's energy."""

    def __init__(self, uuid: str, parent: FakeGpu) -> None:
        self.uuid, self.parent = uuid, parent
        self.name = f"{parent.name} MIG 1g.18gb"
        self.processes: list[int] = []


class FakeGpu:
    def __init__(
        self,
        uuid: str,
        name: str | bytes = "NVIDIA H100 80GB HBM3",
        *,
        power_limit_mw: int = 700_000,
        energy_mj: int | None = 0,
        power_mw: int = 100_000,
        power_steps: Sequence[tuple[float, int]] = (),
        counter_update_s: float | None = 0.1,
        counter_offset_s: float = 0.0,
        averaged_power_s: float | None = 1.0,
        instant_field: bool = True,
        power_supported: bool = True,
        power_read_gain: float = 1.0,
        mig_instances: Sequence[str] = (),
        temperature_c: int | None = 45,
        sm_clock_mhz: int | None = 1980,
        pstate: int | None = 0,
        processes: Sequence[int] = (),
    ) -> None:
        self.uuid, self.name, self.power_limit_mw = uuid, name, power_limit_mw
        self.energy_mj = energy_mj
        self.steps: list[tuple[float, int]] = [(-math.inf, power_mw), *power_steps]
        self.counter_update_s, self.counter_offset_s = counter_update_s, counter_offset_s
        self.averaged_power_s, self.instant_field = averaged_power_s, instant_field
        self.power_supported, self.power_read_gain = power_supported, power_read_gain
        self.migs = [FakeMig(mig, self) for mig in mig_instances]
        self.temperature_c, self.sm_clock_mhz, self.pstate = temperature_c, sm_clock_mhz, pstate
        self.processes, self.processes_error = list(processes), None  # an Exception to raise
        self.energy_errors: list[Exception] = []  # raised by the next counter reads
        self.power_errors: list[Exception] = []  # raised by the next power reads
        self.clock: FakeClock | RealClock | None = None  # the fake NVML's, once it has one

    # -- power as a function of time -------------------------------------------------------

    @property
    def power_mw(self) -> int:
        """The latest power level."""
        return self.steps[-1][1]

    @power_mw.setter
    def power_mw(self, value: int) -> None:
        """From now on (the clock's time), draw ``value`` milliwatts."""
        at = self.clock.t if self.clock is not None else -math.inf
        self.steps = [step for step in self.steps if step[0] < at] + [(at, value)]

    def power_at(self, t: float) -> int:
        level = self.steps[0][1]
        for start, mw in self.steps:
            if start <= t:
                level = mw
        return level

    def energy_mj_between(self, a: float, b: float) -> float:
        """Millijoules drawn from ``a`` to ``b`` (negative when b < a)."""
        if b < a:
            return -self.energy_mj_between(b, a)
        total = 0.0
        for i, (start, mw) in enumerate(self.steps):
            end = self.steps[i + 1][0] if i + 1 < len(self.steps) else math.inf
            lo, hi = max(a, start), min(b, end)
            if hi > lo:
                total += mw * (hi - lo)
        return total

    def counter_mj(self, t: float) -> int:
        """The energy counter at ``t``: energy up to its latest update (none before the first)."""
        if self.counter_update_s is None:
            return self.energy_mj
        period, offset = self.counter_update_s, self.counter_offset_s
        updates = math.floor((t - offset) / period + 1e-9)
        last_update = offset + updates * period
        return self.energy_mj + round(self.energy_mj_between(0.0, last_update))

    def averaged_mw(self, t: float) -> float:
        if not self.averaged_power_s:
            return self.power_at(t)
        return self.energy_mj_between(t - self.averaged_power_s, t) / self.averaged_power_s


class FakeNvml:
    """A scripted NVML: GPUs in NVML index order, one clock, and counts of what was called."""

    installed: FakeNvml | None = None  # the latest fake installed into pynvml

    FUNCTIONS = (
        "nvmlInit",
        "nvmlShutdown",
        "nvmlDeviceGetCount",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetHandleByUUID",
        "nvmlDeviceGetIndex",
        "nvmlDeviceGetName",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlSystemGetDriverVersion",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetFieldValues",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetClockInfo",
        "nvmlDeviceGetPerformanceState",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceIsMigDeviceHandle",
        "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
        "nvmlDeviceGetComputeRunningProcesses",
    )

    def __init__(
        self,
        *gpus: FakeGpu,
        init_error: Exception | None = None,
        clock: FakeClock | RealClock | None = None,
        call_s: float = 0.0,
        module: Any = None,
    ) -> None:
        self.gpus = list(gpus)
        self.init_error = init_error
        self.clock = FakeClock() if clock is None else clock
        for gpu in self.gpus:
            gpu.clock = self.clock
        self.call_s = call_s
        self.slow: dict[str, list[float]] = {}  # by function: extra seconds of the next calls
        self.module = pynvml if module is None else module  # holds _nvmlLib_refcount
        self.session_pid: int | None = None
        self.inits = 0
        self.shutdowns = 0
        self.events: list[dict[str, Any]] = []  # init and shutdown, with pid and refcount
        self.power_reads = 0
        self.power_failures: dict[int, Exception] = {}  # by number of the power read, from 1
        self.power_read_event = threading.Event()  # set once power_reads reaches wake_at
        self.wake_at = 0
        self.device_calls: Counter[tuple[str, str]] = Counter()  # by (UUID, function)

    def install(self, monkeypatch: Any) -> FakeNvml:
        """Replace pynvml's functions with this fake's, and hide the real GPU list."""
        for name in self.FUNCTIONS:
            monkeypatch.setattr(pynvml, name, getattr(self, name))
        monkeypatch.setattr(pynvml, "_nvmlLib_refcount", 0)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        FakeNvml.installed = self
        return self

    # -- the session -----------------------------------------------------------------------

    @property
    def refcount(self) -> int:
        return self.module._nvmlLib_refcount

    @refcount.setter
    def refcount(self, value: int) -> None:
        self.module._nvmlLib_refcount = value

    def nvmlInit(self) -> None:
        self._tick("nvmlInit")
        if self.init_error is not None:
            raise self.init_error
        if self.refcount == 0:
            self.session_pid = os.getpid()
        self.refcount += 1  # an inherited session is only counted again, never renewed
        self.inits += 1
        self._event("init")

    def nvmlShutdown(self) -> None:
        self._tick("nvmlShutdown")
        self.shutdowns += 1
        if self.refcount > 0:
            self.refcount -= 1
            if self.refcount == 0:
                self.session_pid = None
        self._event("shutdown")

    def _event(self, name: str) -> None:
        self.events.append({"event": name, "pid": os.getpid(), "refcount": self.refcount})

    def _call(self, name: str, handle: FakeGpu | FakeMig | None = None) -> None:
        """Every device call: it takes time, and needs this process's own session."""
        self._tick(name)
        if handle is not None:
            self.device_calls[getattr(handle, "uuid", repr(handle)), name] += 1
        if self.refcount == 0:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        if self.session_pid != os.getpid():
            raise nvml_error(pynvml.NVML_ERROR_UNKNOWN)

    def _tick(self, name: str) -> None:
        queued = self.slow.get(name)
        seconds = self.call_s + (queued.pop(0) if queued else 0.0)
        if seconds:
            self.clock.advance(seconds)

    # -- devices ---------------------------------------------------------------------------

    def nvmlSystemGetDriverVersion(self) -> str:
        self._call("nvmlSystemGetDriverVersion")
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._call("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeGpu | FakeMig:
        self._call("nvmlDeviceGetHandleByUUID")
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for gpu in self.gpus:
            for device in (gpu, *gpu.migs):
                if device.uuid == text:
                    return device
        raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetIndex(self, handle: FakeGpu | FakeMig) -> int:
        self._call("nvmlDeviceGetIndex", handle)
        if isinstance(handle, FakeMig):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus.index(handle)

    def nvmlDeviceGetName(self, handle: FakeGpu | FakeMig) -> str | bytes:
        self._call("nvmlDeviceGetName", handle)
        return handle.name

    def nvmlDeviceGetUUID(self, handle: FakeGpu | FakeMig) -> str:
        self._call("nvmlDeviceGetUUID", handle)
        return handle.uuid

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeGpu) -> int:
        self._call("nvmlDeviceGetEnforcedPowerLimit", handle)
        return self._gpu(handle).power_limit_mw

    def nvmlDeviceGetMigMode(self, handle: FakeGpu) -> list[int]:
        self._call("nvmlDeviceGetMigMode", handle)
        enabled = int(bool(self._gpu(handle).migs))
        return [enabled, enabled]

    def nvmlDeviceIsMigDeviceHandle(self, handle: FakeGpu | FakeMig) -> int:
        self._call("nvmlDeviceIsMigDeviceHandle", handle)
        return int(isinstance(handle, FakeMig))

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: FakeMig) -> FakeGpu:
        self._call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
        if not isinstance(handle, FakeMig):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle.parent

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu | FakeMig) -> list[Any]:
        self._call("nvmlDeviceGetComputeRunningProcesses", handle)
        if isinstance(handle, FakeGpu) and handle.processes_error is not None:
            raise handle.processes_error
        migs = handle.migs if isinstance(handle, FakeGpu) else []
        pids = handle.processes + [pid for mig in migs for pid in mig.processes]
        return [SimpleNamespace(pid=pid, usedGpuMemory=1 << 30, gpuInstanceId=0xFFFFFFFF,
                                computeInstanceId=0xFFFFFFFF) for pid in pids]

    # -- energy and power ------------------------------------------------------------------

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGpu | FakeMig) -> int:
        self._call("nvmlDeviceGetTotalEnergyConsumption", handle)
        if isinstance(handle, FakeMig) or handle.energy_mj is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if handle.energy_errors:
            raise handle.energy_errors.pop(0)
        return handle.counter_mj(self.clock.t)

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu | FakeMig) -> int:
        self._call("nvmlDeviceGetPowerUsage", handle)
        gpu = self._power_read(handle)
        return round(gpu.averaged_mw(self.clock.t) * gpu.power_read_gain)

    def nvmlDeviceGetFieldValues(self, handle: FakeGpu | FakeMig, field_ids: list) -> list:
        self._call("nvmlDeviceGetFieldValues", handle)
        values = []
        for entry in field_ids:
            field_id, scope = entry if isinstance(entry, tuple) else (entry, 0)
            value = SimpleNamespace(fieldId=field_id, scopeId=scope, latencyUsec=0,
                                    timestamp=int(self.clock.t * 1e6),
                                    valueType=pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
                                    nvmlReturn=pynvml.NVML_ERROR_NOT_SUPPORTED,
                                    value=SimpleNamespace(uiVal=0))
            if field_id == pynvml.NVML_FI_DEV_POWER_INSTANT and not isinstance(handle, FakeMig) \
                    and handle.instant_field:
                gpu = self._power_read(handle)
                value.value.uiVal = round(gpu.power_at(self.clock.t) * gpu.power_read_gain)
                value.nvmlReturn = pynvml.NVML_SUCCESS
            values.append(value)
        return values

    def _power_read(self, handle: FakeGpu | FakeMig) -> FakeGpu:
        """Count a power read and raise what is scripted for it; the GPU to read."""
        self.power_reads += 1
        if self.wake_at and self.power_reads >= self.wake_at:
            self.power_read_event.set()
        if isinstance(handle, FakeMig) or not handle.power_supported:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if self.power_reads in self.power_failures:
            raise self.power_failures[self.power_reads]
        if handle.power_errors:
            raise handle.power_errors.pop(0)
        return handle

    # -- telemetry -------------------------------------------------------------------------

    def nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:
        self._call("nvmlDeviceGetTemperature", handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._supported(self._gpu(handle).temperature_c)

    def nvmlDeviceGetClockInfo(self, handle: FakeGpu, clock_type: int) -> int:
        self._call("nvmlDeviceGetClockInfo", handle)
        if clock_type != pynvml.NVML_CLOCK_SM:  # the graphics clock is another number
            return 1
        return self._supported(self._gpu(handle).sm_clock_mhz)

    def nvmlDeviceGetPerformanceState(self, handle: FakeGpu) -> int:
        self._call("nvmlDeviceGetPerformanceState", handle)
        return self._supported(self._gpu(handle).pstate)

    @staticmethod
    def _gpu(handle: FakeGpu | FakeMig) -> FakeGpu:
        return handle.parent if isinstance(handle, FakeMig) else handle

    @staticmethod
    def _supported(value: int | None) -> int:
        if value is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value


def hopper(uuid: str = UUIDS[0], **kwargs: Any) -> FakeGpu:
    """A GPU with an H100/H200's habits: a counter that updates every 100 ms at an offset from
    t = 0, power averaged over one second with the instantaneous field beside it."""
    return FakeGpu(uuid, **{"energy_mj": 5_000_000_000,  # since the driver loaded
                            "counter_update_s": 0.1, "counter_offset_s": 0.037,
                            "averaged_power_s": 1.0, "instant_field": True, **kwargs})
