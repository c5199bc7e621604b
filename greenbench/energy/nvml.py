"""GPU energy from NVML, behind greenbench's meter interface.

``NvmlMeter`` measures the energy of the GPUs a run uses, as one ``gpu`` component (the sum over
its devices), and keeps per-device detail for ``details()``.

Design:

* **Two measuring paths, chosen per device at ``start()``.** Where the driver exposes the GPU's
  cumulative energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since driver
  load; Volta and newer), the meter reads it at ``start()`` and at every ``read()``: the energy is
  the difference, exact up to the counter's own resolution, with nothing running in between
  (source ``nvml_energy_counter``). Where the counter cannot be read, one daemon thread samples
  ``nvmlDeviceGetPowerUsage`` (milliwatts) of every such device every ``1/sample_hz`` seconds and
  integrates with the trapezoid rule (source ``nvml_power_sampling``). Every ``read()`` also
  takes a fresh sample at its own time, so a window's edges are where they were asked for and
  not up to one period late. The combined reading is ``nvml_energy_counter`` only when every
  device uses the counter; ``details()`` says which device uses which path and why.
* **Device numbering.** An int is a CUDA device index as torch numbers devices: the i-th entry
  of ``CUDA_VISIBLE_DEVICES`` when that is set (entries are NVML indices or ``GPU-``/``MIG-``
  UUIDs, a UUID may be a unique prefix, and, as in CUDA, an invalid entry ends the list), else
  NVML index i. A string is a UUID (``"0"`` and ``"cuda:0"`` are read as indices). CUDA orders
  devices fastest first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, NVML by PCI bus: on a machine
  with mixed GPU models pass UUIDs (torch's ``get_device_properties(i).uuid``) to be exact. The
  same physical GPU named twice is measured once.
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
  Every failed read adds one fault, so any window that contains one is visibly invalid.
* **Threading.** One lock guards all integrator and counter state; NVML is called only with it
  held, so ``read()``, ``sample()`` and the thread never interleave. The thread sleeps on a
  ``threading.Event`` between samples and so stops promptly on ``stop()``. The clock is
  injectable (``clock=``) and ``sample()`` is public, so tests can drive sampling exactly.
* **Lazy imports.** pynvml is imported in ``start()``; importing this module imports neither
  pynvml nor torch.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from greenbench.energy.meters import GPU, NVML_COUNTER, NVML_SAMPLING, Meter, Reading
from greenbench.energy.nvml_devices import (
    Device,
    DeviceSpec,
    describe_error,
    normalise_spec,
    nvml_text,
    parse_visible_devices,
    try_call,
)

log = logging.getLogger(__name__)

MAX_SAMPLE_HZ = 1000.0  # beyond this the sampling thread would be close to busy waiting
_JOIN_TIMEOUT_S = 5.0
_THREAD_NAME = "greenbench-nvml-sampler"


class _Unavailable(Exception):
    """Raised inside ``start()`` when the GPUs cannot be measured; the message is the reason."""


class NvmlMeter(Meter):
    """Energy of the given GPUs, summed as the ``gpu`` component; see the module docstring."""

    components = (GPU,)

    def __init__(
        self,
        devices: Sequence[DeviceSpec],
        sample_hz: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        force_sampling: bool = False,
    ) -> None:
        """``devices``: CUDA indices (as torch numbers them) or UUIDs. ``sample_hz``: power
        sampling rate for devices without an energy counter. ``clock``: monotonic seconds, for
        sample times. ``force_sampling``: sample power even where the counter works (to
        cross-check the two paths)."""
        sample_hz = float(sample_hz)
        if not (math.isfinite(sample_hz) and 0 < sample_hz <= MAX_SAMPLE_HZ):
            raise ValueError(f"sample_hz must be in (0, {MAX_SAMPLE_HZ:g}], got {sample_hz!r}")
        self._requested = [normalise_spec(spec) for spec in devices]
        self.sample_hz = sample_hz
        self.force_sampling = force_sampling
        self._clock = clock
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
            except _Unavailable as exc:
                self._unavailable = str(exc)
                self._devices = []
                self._shutdown_nvml()
                return
            sampled = any(dev.source == NVML_SAMPLING for dev in self._devices)
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
        """Sample the power of every sampled device now and integrate it.

        The sampling thread calls this every ``1/sample_hz`` seconds and ``read()`` calls it
        once; tests may call it to drive sampling deterministically. Does nothing before
        ``start()``, after ``stop()`` or when no device is sampled.
        """
        with self._lock:
            self._sample_locked()

    def details(self) -> dict[str, Any]:
        with self._lock:
            return {
                "driver_version": self._driver_version,
                "sample_hz": self.sample_hz,
                "force_sampling": self.force_sampling,
                "devices": [dev.describe() for dev in self._devices],
                "unavailable": self._unavailable,
            }

    # -- start -----------------------------------------------------------------------------

    def _open(self) -> None:
        """Initialise NVML, open every device and take the starting values, or raise
        ``_Unavailable``. Called with the lock held."""
        if not self._requested:
            raise _Unavailable("no GPU in use")
        try:
            import pynvml
        except ImportError as exc:
            raise _Unavailable("nvidia-ml-py (pynvml) is not installed") from exc
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound as exc:
            raise _Unavailable("NVML library not found") from exc
        except pynvml.NVMLError_DriverNotLoaded as exc:
            raise _Unavailable("NVIDIA driver not loaded") from exc
        except Exception as exc:  # NVMLError or anything else the binding raises
            raise _Unavailable(f"NVML failed to initialise: {describe_error(exc)}") from exc
        self._nvml = pynvml

        self._driver_version = nvml_text(try_call(pynvml.nvmlSystemGetDriverVersion))
        visible = parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
        for spec in self._requested:
            self._add_device(spec, visible)
        # Starting values last, all together, so that joules count from the end of start().
        for dev in self._devices:
            self._choose_path(dev)
        self._baseline_samples()

    def _add_device(self, spec: DeviceSpec, visible: list[DeviceSpec] | None) -> None:
        nv = self._nvml
        label = f"cuda:{spec}" if isinstance(spec, int) else spec
        target: DeviceSpec = spec
        if isinstance(spec, int) and visible is not None:
            if spec >= len(visible):
                shown = os.environ.get("CUDA_VISIBLE_DEVICES")
                raise _Unavailable(f"{label} is not visible (CUDA_VISIBLE_DEVICES={shown!r})")
            target = visible[spec]
        try:
            if isinstance(target, int):
                handle, index = nv.nvmlDeviceGetHandleByIndex(target), target
            else:
                handle, index = self._handle_by_uuid(target)
        except Exception as exc:
            raise _Unavailable(f"{label}: NVML cannot open it ({describe_error(exc)})") from exc
        if index is None:
            index = try_call(nv.nvmlDeviceGetIndex, handle)
        uuid = nvml_text(try_call(nv.nvmlDeviceGetUUID, handle))

        for dev in self._devices:  # the same GPU named twice is measured once
            if (uuid is not None and dev.uuid == uuid) or (
                uuid is None and index is not None and dev.index == index
            ):
                dev.requested.append(spec)
                return
        if index is not None and label != f"cuda:{index}":
            label = f"{label} (NVML {index})"
        limit_mw = try_call(nv.nvmlDeviceGetEnforcedPowerLimit, handle)
        self._devices.append(
            Device(
                requested=[spec],
                label=label,
                handle=handle,
                index=index,
                uuid=uuid,
                name=nvml_text(try_call(nv.nvmlDeviceGetName, handle)),
                power_limit_w=None if limit_mw is None else limit_mw / 1000,
            )
        )

    def _handle_by_uuid(self, uuid: str) -> tuple[Any, int | None]:
        """The handle of the device with this UUID, or with the one UUID it is a prefix of
        (as ``CUDA_VISIBLE_DEVICES`` allows)."""
        nv = self._nvml
        try:
            return nv.nvmlDeviceGetHandleByUUID(uuid), None
        except Exception as exact_error:
            matches = []
            for i in range(try_call(nv.nvmlDeviceGetCount) or 0):
                handle = try_call(nv.nvmlDeviceGetHandleByIndex, i)
                uuid_of = None if handle is None else try_call(nv.nvmlDeviceGetUUID, handle)
                other = nvml_text(uuid_of)
                if other is not None and other.startswith(uuid):
                    matches.append((handle, i))
            if len(matches) == 1:
                return matches[0]
            raise exact_error

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

    def _sampled_devices(self) -> list[Device]:
        return [dev for dev in self._devices if dev.source == NVML_SAMPLING]

    def _baseline_samples(self) -> None:
        sampled = self._sampled_devices()
        if not sampled:
            return
        now = self._clock()
        for dev in sampled:
            try:
                dev.last_mw = int(self._nvml.nvmlDeviceGetPowerUsage(dev.handle))
            except Exception as exc:
                why = dev.counter_error or "not read"
                raise _Unavailable(
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
        everything_counted = all(dev.source == NVML_COUNTER for dev in self._devices)
        return {
            GPU: Reading(
                joules=sum(dev.joules() for dev in self._devices),
                source=NVML_COUNTER if everything_counted else NVML_SAMPLING,
                faults=self._faults,
                fault=self._fault,
            )
        }

    def _read_counters_locked(self) -> None:
        for dev in self._devices:
            if dev.source != NVML_COUNTER:
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
        sampled = self._sampled_devices()
        if not sampled:
            return
        now = self._clock()
        for dev in sampled:
            try:
                power_mw = int(self._nvml.nvmlDeviceGetPowerUsage(dev.handle))
            except Exception as exc:
                self._record_fault(f"{dev.label}: power read failed: {describe_error(exc)}")
                dev.last_t = None  # integration restarts at the next good sample
                continue
            if dev.last_t is not None and now > dev.last_t:
                dev.sampled_j += (dev.last_mw + power_mw) * (now - dev.last_t) / 2000
            dev.last_t, dev.last_mw = now, power_mw

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
