"""GPU energy from NVML, behind greenbench's meter interface.

``NvmlMeter`` measures the energy of the GPUs a run uses, as one ``gpu`` component (the sum over
its devices), and keeps per-device detail for ``details()``: each device's ``energy_j`` since
``start()`` as of the latest reading, to the millijoule (exactly the total's terms on the counter
path; within half a millijoule each on the sampling path, whose total is not rounded).

Design:

* **Two measuring paths, chosen per device at ``start()``.** Where the driver exposes the GPU's
  cumulative energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since driver
  load; Volta and newer), the meter reads it at ``start()`` and at every ``read()``: the energy is
  the difference, exact up to the counter's own resolution, with nothing running in between
  (source ``nvml_energy_counter``). Where the counter cannot be read, or never changes while
  ``start()`` times it, one daemon thread samples the power (milliwatts) of every such device
  every ``1/sample_hz`` seconds and integrates with the trapezoid rule (source
  ``nvml_power_sampling``). Power is the instantaneous field (``NVML_FI_DEV_POWER_INSTANT``)
  where the driver has it, else ``nvmlDeviceGetPowerUsage``, which newer GPUs average over one
  second; each device's ``power_reading`` (``instant`` or ``averaged_1s``) says which
  (``nvml_power``). Every ``read()`` also
  takes a fresh sample at its own time, so a window's edges are where they were asked for and
  not up to one period late. The combined reading is ``nvml_energy_counter`` only when every
  device uses the counter; ``details()`` says which device uses which path and why.
* **A cross-check beside the counter.** The thread also samples the power of every device on
  the counter path and integrates it apart from the counter; ``Reading.cross_check_j`` is that
  integral summed over the counter devices (None when no device uses the counter). The counter
  stays the measurement: a failed power read there adds no fault, it ends that device's
  cross-check (``cross_check_j`` is None from then on, the reason in ``details()``).
  ``Reading.cross_check_period_s`` is the cross-check's resolution (the sampling period, the
  counter's, and one second for an averaged reading, whichever is longest): the monitor judges
  only windows of several of them.
* **Period.** ``period_s`` is how often the energy figure changes, the largest over the
  devices: on the sampling path ``1/sample_hz``, or the averaging period when that is longer;
  on the counter path the counter's update period, timed at ``start()`` as Zeus does (the
  smallest interval between the counter's changes over up to ``COUNTER_PROBE_S`` of polling,
  so ``start()`` takes up to 0.5 s; a counter that changed only once in that time gets the
  bound as a floor, ``period_basis`` ``probe_floor``). Energy counts from the end of
  ``start()``, after the probe.
* **Whose energy.** NVML's counter and power belong to a whole GPU. A MIG instance is measured
  through its GPU, and it, or a GPU with MIG mode on, is marked ``scope: shared_device`` (in
  ``details()`` and on every reading, with the reason): the figure is every tenant's. So is a
  GPU on which, at ``start()``, NVML lists compute processes that are not the run's
  (``own_pids``, by default this process; the list is each device's ``processes``, None with
  ``processes_error`` where it cannot be read, which marks nothing). In a container NVML may
  give host pids, so that none matches: then the GPU is shared only when more processes are
  listed than the run has. A MIG instance's list is its whole GPU's.
* **Telemetry.** ``telemetry()`` (temperature, SM clock, enforced power limit, performance
  state per device) and ``temperatures()`` read NVML now; what cannot be read is None.
* **Device numbering.** An int is a CUDA device index as torch numbers devices: the i-th entry
  of ``CUDA_VISIBLE_DEVICES`` when that is set (entries are NVML indices or ``GPU-``/``MIG-``
  UUIDs, a UUID may be a unique prefix, and, as in CUDA, an invalid entry ends the list), else
  NVML index i. A string is a UUID, with or without NVML's ``GPU-``/``MIG-`` prefix (``"0"``
  and ``"cuda:0"`` are read as indices). CUDA orders devices fastest first unless
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, NVML by PCI bus: pass UUIDs (torch's
  ``get_device_properties(i).uuid``, as ``EnergyCallback`` does) to be exact; each device's
  ``matched_by`` and, by index, ``cuda_device_order`` say how it was found. The same physical
  GPU named twice is measured once.
* **Unavailable, never zero.** If pynvml cannot be imported, NVML does not initialise, no device
  is given, or a device cannot be opened or measured at all, the whole component is unavailable
  (``joules=None``, source ``unavailable``, with the reason): a sum over only some of the GPUs
  would understate the energy while looking measured.
* **Faults, and the run goes on.** A counter that goes backwards (counter reset, driver reload)
  adds one fault naming the device and re-bases on the new value; the energy between the last
  good reading and the reset is unknown and is not guessed, and later windows are valid again.
  An error while reading a counter keeps its last good value (the counter keeps counting, so the
  next good read recovers the energy in between); an error while sampling power keeps the
  integral and restarts integration at the next good sample (the gap is lost, not interpolated).
  Every failed read of a measurement adds one fault, so any window that contains one is
  visibly invalid (a cross-check's failed read is no fault: see above).
* **Threading.** One lock guards all integrator and counter state; NVML is called only with it
  held, so ``read()``, ``sample()`` and the thread never interleave. The thread sleeps on a
  ``threading.Event`` between samples and so stops promptly on ``stop()``. The clock and the
  sleep of the counter probe are injectable (``clock=``, ``sleep=``) and ``sample()`` is
  public, so tests can drive timing and sampling exactly.
* **Lazy imports.** pynvml is imported in ``start()``; importing this module imports neither
  pynvml nor torch.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from greenbench.energy.meters import GPU, NVML_COUNTER, NVML_SAMPLING, Meter, Reading
from greenbench.energy.nvml_devices import (
    Device,
    DeviceSpec,
    NvmlUnavailable,
    add_device,
    describe_error,
    initialise_nvml,
    normalise_spec,
    note_processes,
    nvml_text,
    open_device,
    parse_visible_devices,
    try_call,
)
from greenbench.energy.nvml_power import (
    AVERAGING_S,
    combined,
    first_power_reading,
    read_power_mw,
)
from greenbench.energy.nvml_telemetry import (
    COUNTER_PROBE_S,
    PERIOD_AVERAGING,
    PERIOD_SAMPLE_HZ,
    probe_counter_periods,
    read_telemetry,
    read_temperature,
)

log = logging.getLogger(__name__)

MAX_SAMPLE_HZ = 1000.0  # beyond this the sampling thread would be close to busy waiting
_JOIN_TIMEOUT_S = 5.0
_THREAD_NAME = "greenbench-nvml-sampler"


class NvmlMeter(Meter):
    """Energy of the given GPUs, summed as the ``gpu`` component; see the module docstring."""

    components = (GPU,)

    def __init__(
        self,
        devices: Sequence[DeviceSpec],
        sample_hz: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        force_sampling: bool = False,
        own_pids: Collection[int] | None = None,
    ) -> None:
        """``devices``: CUDA indices (as torch numbers them) or UUIDs. ``sample_hz``: power
        sampling rate (the measurement where there is no energy counter, the cross-check where
        there is). ``clock``: monotonic seconds, for sample times and the counter probe;
        ``sleep``: how the probe waits, in ``clock``'s seconds. ``force_sampling``: measure by
        sampled power even where the counter works (to compare the two paths). ``own_pids``: the
        run's processes, whose compute processes on a GPU do not make it shared (None: the
        process that calls ``start()``)."""
        sample_hz = float(sample_hz)
        if not (math.isfinite(sample_hz) and 0 < sample_hz <= MAX_SAMPLE_HZ):
            raise ValueError(f"sample_hz must be in (0, {MAX_SAMPLE_HZ:g}], got {sample_hz!r}")
        self._requested = [normalise_spec(spec) for spec in devices]
        self.sample_hz = sample_hz
        self.force_sampling = force_sampling
        self._own_pids = None if own_pids is None else frozenset(map(int, own_pids))
        self._clock = clock
        self._sleep = sleep
        self._period = 1.0 / sample_hz

        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None  # the pynvml module while NVML is initialised
        self._started = False
        self._final: dict[str, Reading] | None = None  # the reading taken by stop()
        self._devices: list[Device] = []
        self._driver_version: str | None = None
        self._unavailable: str | None = None
        self._faults = 0
        self._fault: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started:
                raise RuntimeError("NvmlMeter.start() may be called only once")
            self._started = True
            try:
                self._open()
            except NvmlUnavailable as exc:
                self._unavailable = str(exc)
                self._devices = []
                self._shutdown_nvml()
                return
            sampled = any(dev.samples_power for dev in self._devices)
        if sampled:
            self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
            self._thread.start()

    def read(self) -> dict[str, Reading]:
        with self._lock:
            if self._final is not None:
                return dict(self._final)
            return self._read_locked()

    def stop(self) -> None:
        with self._lock:
            if not self._started or self._final is not None:
                return
            self._final = self._read_locked()
        self._stop_event.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("NVML sampling thread did not stop within %.0f s", _JOIN_TIMEOUT_S)
        with self._lock:
            self._shutdown_nvml()

    def sample(self) -> None:
        """Sample the power of every sampled device now and integrate it (the measurement on
        the sampling path, the cross-check on the counter path).

        The sampling thread calls this every ``1/sample_hz`` seconds and ``read()`` calls it
        once; tests may call it to drive sampling deterministically. Does nothing before
        ``start()``, after ``stop()`` or when no device is sampled.
        """
        with self._lock:
            self._sample_locked()

    @property
    def period_s(self) -> float | None:
        """The slowest device's period (see the module docstring); None before ``start()`` or
        when the GPUs are unavailable."""
        with self._lock:
            return self._period_locked()

    @property
    def counter_period_s(self) -> float | None:
        """The slowest energy counter's update period (its quantum of time), None when no
        device is measured by its counter."""
        with self._lock:
            periods = [dev.period_s for dev in self._devices if dev.counted and dev.period_s]
            return max(periods) if periods else None

    def details(self) -> dict[str, Any]:
        with self._lock:
            return {
                "driver_version": self._driver_version,
                "sample_hz": self.sample_hz,
                "force_sampling": self.force_sampling,
                "period_s": self._period_locked(),
                "counter_probe_s": COUNTER_PROBE_S,
                "power_reading": combined([dev.power_reading for dev in self._devices]),
                "scope": self._scope_locked()[0],
                "devices": [dev.describe() for dev in self._devices],
                "unavailable": self._unavailable,
            }

    def telemetry(self) -> dict[str, Any] | None:
        """Per device label (as in ``details()``): ``temperature_c``, ``sm_clock_mhz``,
        ``power_limit_w``, ``pstate`` (``"P0"`` .. ``"P15"``), each None when unreadable. None
        when no device is open (before ``start()``, after ``stop()``, GPUs unavailable)."""
        with self._lock:
            if self._nvml is None or not self._devices:
                return None
            return {dev.label: read_telemetry(self._nvml, dev.handle) for dev in self._devices}

    def temperatures(self) -> dict[str, float | None]:
        """Each device's temperature in °C now (None where unreadable), by label; empty when
        no device is open. For a cool-down wait, which is the caller's to do."""
        with self._lock:
            if self._nvml is None:
                return {}
            return {dev.label: read_temperature(self._nvml, dev.handle) for dev in self._devices}

    # -- start -----------------------------------------------------------------------------

    def _open(self) -> None:
        """Initialise NVML, open every device and take the starting values, or raise
        ``NvmlUnavailable``. Called with the lock held."""
        if not self._requested:
            raise NvmlUnavailable("no GPU in use")
        self._nvml = pynvml = initialise_nvml()
        self._driver_version = nvml_text(try_call(pynvml.nvmlSystemGetDriverVersion))
        visible = parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
        for spec in self._requested:
            add_device(self._devices, open_device(pynvml, spec, visible))
        own_pids = {os.getpid()} if self._own_pids is None else self._own_pids
        for dev in self._devices:
            note_processes(pynvml, dev, own_pids)
            self._choose_path(dev)
        probe_counter_periods(
            pynvml, [dev for dev in self._devices if dev.counted], self._clock, self._sleep
        )
        # Starting values last, all together, so that joules count from the end of start().
        self._take_starting_values()
        for dev in self._devices:
            if not dev.counted:
                averaging = AVERAGING_S.get(dev.power_reading or "", 0.0)
                dev.period_s, dev.period_basis = max(
                    (self._period, PERIOD_SAMPLE_HZ), (averaging, PERIOD_AVERAGING))

    def _choose_path(self, dev: Device) -> None:
        if self.force_sampling:
            dev.counter_error = "sampling forced"
            return
        try:
            dev.base_mj = dev.last_mj = int(
                self._nvml.nvmlDeviceGetTotalEnergyConsumption(dev.handle)
            )
        except Exception as exc:  # NVMLError_NotSupported before Volta, or any other error
            dev.counter_error = describe_error(exc)
        else:
            dev.source = NVML_COUNTER

    def _take_starting_values(self) -> None:
        """Counters and power, read at one time. A device on the sampling path whose power
        cannot be read makes the GPUs unavailable; on the counter path it only forgoes the
        cross-check."""
        now = self._clock()
        for dev in self._devices:
            if dev.counted:
                latest = try_call(self._nvml.nvmlDeviceGetTotalEnergyConsumption, dev.handle)
                if latest is not None:  # else the probe's last good value stands
                    dev.last_mj = int(latest)
                dev.base_mj = dev.last_mj
            try:
                dev.power_reading, dev.last_mw = first_power_reading(self._nvml, dev.handle)
            except Exception as exc:
                if dev.counted:
                    dev.cross_check_fault = f"power cannot be read: {describe_error(exc)}"
                    continue
                why = dev.counter_error or "not read"
                raise NvmlUnavailable(
                    f"{dev.label}: neither energy counter ({why}) nor power "
                    f"({describe_error(exc)}) can be read"
                ) from exc
            dev.last_t = now

    # -- measuring (lock held) -------------------------------------------------------------

    def _read_locked(self) -> dict[str, Reading]:
        if not self._started:
            return {GPU: Reading.unavailable("meter not started")}
        if self._unavailable is not None:
            return {GPU: Reading.unavailable(self._unavailable)}
        self._read_counters_locked()
        self._sample_locked()
        counted = [dev for dev in self._devices if dev.counted]
        checks = [dev.cross_check_j() for dev in counted]
        checked = bool(checks) and None not in checks
        scope, scope_reason = self._scope_locked()
        for dev in self._devices:
            dev.read_j = dev.joules()
        return {
            GPU: Reading(
                joules=sum(dev.joules() for dev in self._devices),
                source=NVML_COUNTER if len(counted) == len(self._devices) else NVML_SAMPLING,
                faults=self._faults,
                fault=self._fault,
                cross_check_j=sum(checks) if checked else None,
                cross_check_period_s=max(
                    self._cross_check_period(dev) for dev in counted) if checked else None,
                scope=scope,
                scope_reason=scope_reason,
            )
        }

    def _cross_check_period(self, dev: Device) -> float:
        """What the cross-check of a counter device resolves: the sampling period, the
        counter's period and the power reading's averaging period, whichever is longest."""
        return max(self._period, dev.period_s or 0.0,
                   AVERAGING_S.get(dev.power_reading or "", 0.0))

    def _scope_locked(self) -> tuple[str | None, str | None]:
        """The reading's scope: ``shared_device`` when any device's energy is not the run's
        alone (with every reason, by device), else None."""
        shared = [f"{dev.label}: {'; '.join(dev.sharing)}" for dev in self._devices
                  if dev.scope is not None]
        if not shared:
            return None, None
        return next(dev.scope for dev in self._devices if dev.scope), " | ".join(shared)

    def _read_counters_locked(self) -> None:
        for dev in self._devices:
            if not dev.counted:
                continue
            try:
                now_mj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(dev.handle))
            except Exception as exc:
                self._record_fault(
                    f"{dev.label}: energy counter read failed: {describe_error(exc)}")
                continue
            if now_mj < dev.last_mj:
                self._record_fault(
                    f"{dev.label}: energy counter went backwards ({dev.last_mj} -> {now_mj} mJ); "
                    "re-based, the energy since the previous reading is unknown"
                )
                dev.banked_mj += dev.last_mj - dev.base_mj
                dev.base_mj = now_mj
            dev.last_mj = now_mj

    def _sample_locked(self) -> None:
        if not self._started or self._final is not None or self._unavailable is not None:
            return
        sampled = [dev for dev in self._devices if dev.samples_power]
        if not sampled:
            return
        now = self._clock()
        for dev in sampled:
            try:
                power_mw = read_power_mw(self._nvml, dev.handle, dev.power_reading)
            except Exception as exc:
                why = f"power read failed: {describe_error(exc)}"
                if dev.counted:  # the counter stands; only its cross-check ends
                    dev.cross_check_fault = why
                    log.warning("%s: the cross-check of the energy counter ends: %s",
                                dev.label, why)
                else:
                    self._record_fault(f"{dev.label}: {why}")
                    dev.last_t = None  # integration restarts at the next good sample
                continue
            if dev.last_t is not None and now > dev.last_t:
                dev.sampled_j += (dev.last_mw + power_mw) * (now - dev.last_t) / 2000
            dev.last_t, dev.last_mw = now, power_mw

    def _period_locked(self) -> float | None:
        periods = [dev.period_s for dev in self._devices if dev.period_s is not None]
        return max(periods) if periods else None

    def _record_fault(self, reason: str) -> None:
        self._faults += 1
        self._fault = reason

    # -- the rest --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop_event.wait(self._period):
            try:
                self.sample()
            except Exception:  # a bug here must not end sampling silently mid-run
                log.exception("NVML sampling failed")

    def _shutdown_nvml(self) -> None:
        """``nvmlShutdown()`` once, if NVML was initialised; never raises. Lock held."""
        nv, self._nvml = self._nvml, None
        if nv is None:
            return
        try:
            nv.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown failed: %s", describe_error(exc))
