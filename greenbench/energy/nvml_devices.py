"""The NVML side of the GPU meter: one measured device and its state, how a device is named and
opened (CUDA indices, UUIDs with or without their ``GPU-``/``MIG-`` prefix,
``CUDA_VISIBLE_DEVICES``, UUID prefixes), whether its energy is the run's alone (MIG, compute
processes of others), and small helpers for NVML's return values."""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from greenbench.energy.meters import NVML_COUNTER, NVML_SAMPLING, SHARED_DEVICE

DeviceSpec = int | str
UUID_PREFIXES = ("GPU-", "MIG-")


class NvmlUnavailable(Exception):
    """The GPUs cannot be measured; the message is the reason."""


@dataclass
class Device:
    """One physical GPU: what it is, which path measures it, and that path's state."""

    requested: list[DeviceSpec]
    label: str  # names the device in fault reasons, details() and telemetry()
    handle: Any  # the whole GPU's (for a MIG instance: its parent's)
    index: int | None
    uuid: str | None
    name: str | None = None
    power_limit_w: float | None = None
    matched_by: str = "index"  # "uuid": exact; "index": through the CUDA device order
    cuda_device_order: str | None = None  # by index: the order it was read in
    mig_uuid: str | None = None  # the MIG instance asked for, where one was
    # Why this GPU's energy is not the run's alone (a MIG instance, MIG mode on, others'
    # processes); empty: it is.
    sharing: list[str] = field(default_factory=list)
    # The compute processes NVML listed on it at start (pids), None when they could not be.
    processes: list[int] | None = None
    processes_error: str | None = None  # why they could not be listed
    read_j: float | None = None  # its joules at the latest read, None before one
    source: str = NVML_SAMPLING
    counter_error: str | None = None  # why the counter is not used, if it is not
    power_reading: str | None = None  # nvml_power.INSTANT or AVERAGED_1S, once power was read
    # How often this device's energy figure changes, and how that was found (set at start).
    period_s: float | None = None
    period_basis: str | None = None
    # Counter path, integer millijoules: energy = banked + (last - base).
    base_mj: int = 0
    last_mj: int = 0
    banked_mj: int = 0
    # Power sampling: the previous good sample (None after a failed one) and the integral. On
    # the sampling path this is the measurement; on the counter path, the cross-check.
    last_t: float | None = None
    last_mw: int = 0
    sampled_j: float = 0.0
    # Counter path: why the cross-check stopped (its integral is then no longer whole).
    cross_check_fault: str | None = None

    @property
    def counted(self) -> bool:
        return self.source == NVML_COUNTER

    @property
    def samples_power(self) -> bool:
        """Sampled: for its measurement, or for the cross-check of its counter."""
        return not self.counted or self.cross_check_fault is None

    @property
    def scope(self) -> str | None:
        """``shared_device`` when the GPU's energy is not this run's alone, else None."""
        return SHARED_DEVICE if self.sharing else None

    def joules(self) -> float:
        if self.counted:
            return (self.banked_mj + self.last_mj - self.base_mj) / 1000
        return self.sampled_j

    def cross_check_j(self) -> float | None:
        """Sampled power integrated beside the counter; None off the counter path or after a
        cross-check fault."""
        if not self.counted or self.cross_check_fault is not None:
            return None
        return self.sampled_j

    def describe(self) -> dict[str, Any]:
        return {
            "requested": list(self.requested),
            "label": self.label,
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "matched_by": self.matched_by,
            "cuda_device_order": self.cuda_device_order,
            "mig_uuid": self.mig_uuid,
            "scope": self.scope,
            "sharing": list(self.sharing),
            "power_limit_w": self.power_limit_w,
            "source": self.source,
            "counter_error": self.counter_error,
            "power_reading": self.power_reading,
            "period_s": self.period_s,
            "period_basis": self.period_basis,
            "cross_check_fault": self.cross_check_fault,
            "processes": None if self.processes is None else list(self.processes),
            "processes_error": self.processes_error,
            # to the millijoule, the counter's unit (so exact on the counter path)
            "energy_j": None if self.read_j is None else round(self.read_j, 3),
        }


def initialise_nvml() -> Any:
    """``nvmlInit()`` on the pynvml module, which is returned; raises ``NvmlUnavailable``."""
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable("nvidia-ml-py (pynvml) is not installed") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound as exc:
        raise NvmlUnavailable("NVML library not found") from exc
    except pynvml.NVMLError_DriverNotLoaded as exc:
        raise NvmlUnavailable("NVIDIA driver not loaded") from exc
    except Exception as exc:  # NVMLError or anything else the binding raises
        raise NvmlUnavailable(f"NVML failed to initialise: {describe_error(exc)}") from exc
    return pynvml


def add_device(devices: list[Device], device: Device) -> None:
    """Append ``device``, unless it is a GPU already there (the same GPU named twice, or two
    MIG instances of one GPU, is measured once): then it only adds what was asked for."""
    for dev in devices:
        if (device.uuid is not None and dev.uuid == device.uuid) or (
            device.uuid is None and device.index is not None and dev.index == device.index
        ):
            dev.requested.extend(device.requested)
            dev.sharing.extend(why for why in device.sharing if why not in dev.sharing)
            return
    devices.append(device)


def open_device(nv: Any, spec: DeviceSpec, visible: list[DeviceSpec] | None) -> Device:
    """The device ``spec`` names, opened (raises ``NvmlUnavailable``). A MIG instance is
    measured through its whole GPU and marked shared; so is a GPU with MIG mode on."""
    label = f"cuda:{spec}" if isinstance(spec, int) else spec
    target: DeviceSpec = spec
    if isinstance(spec, int) and visible is not None:
        if spec >= len(visible):
            shown = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise NvmlUnavailable(f"{label} is not visible (CUDA_VISIBLE_DEVICES={shown!r})")
        target = visible[spec]
    try:
        if isinstance(target, int):
            handle, index = nv.nvmlDeviceGetHandleByIndex(target), target
        else:
            handle, index = handle_by_uuid(nv, target)
        handle, mig_uuid, sharing = whole_gpu(nv, handle)
    except Exception as exc:
        raise NvmlUnavailable(f"{label}: NVML cannot open it ({describe_error(exc)})") from exc
    if index is None or mig_uuid is not None:
        index = try_call(nv.nvmlDeviceGetIndex, handle)
    if index is not None and label != f"cuda:{index}":
        label = f"{label} (NVML {index})"
    limit_mw = try_call(nv.nvmlDeviceGetEnforcedPowerLimit, handle)
    return Device(
        requested=[spec], label=label, handle=handle, index=index,
        uuid=nvml_text(try_call(nv.nvmlDeviceGetUUID, handle)),
        name=nvml_text(try_call(nv.nvmlDeviceGetName, handle)),
        power_limit_w=None if limit_mw is None else limit_mw / 1000,
        matched_by="index" if isinstance(target, int) else "uuid",
        # by index, the CUDA order decides which GPU an index is (PCI_BUS_ID: NVML's)
        cuda_device_order=(os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
                           if isinstance(target, int) else None),
        mig_uuid=mig_uuid, sharing=sharing,
    )


def whole_gpu(nv: Any, handle: Any) -> tuple[Any, str | None, list[str]]:
    """(the handle whose energy NVML reports, the MIG instance's UUID or None, why the GPU is
    not the run's alone). NVML's energy counter and power belong to the whole GPU: a MIG
    instance shares them with every other instance on it."""
    if _flag(try_call(nv.nvmlDeviceIsMigDeviceHandle, handle)):
        mig_uuid = nvml_text(try_call(nv.nvmlDeviceGetUUID, handle))
        parent = nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        return parent, mig_uuid, [
            f"a MIG instance ({mig_uuid}): NVML's energy and power are its whole GPU's, "
            "every instance's work together"]
    mode = try_call(nv.nvmlDeviceGetMigMode, handle)  # [current, pending]; NotSupported: no MIG
    enabled = getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1)
    if mode is not None and int(_plain(mode[0])) == enabled:
        return handle, None, [
            "MIG mode is on: the GPU is split into instances, and NVML's energy and power "
            "are all of them together"]
    return handle, None, []


def note_processes(nv: Any, dev: Device, own_pids: Collection[int]) -> None:
    """List the compute processes NVML sees on ``dev`` (on ``dev.handle``: for a MIG instance,
    its whole GPU, which is marked shared anyway) into ``dev.processes``, and mark the device
    shared when some are not the run's. A list that cannot be read is noted, nothing more.

    NVML may report the pids of another PID namespace (a container's processes by their host
    pids), so that none of the run's matches: then only more processes than the run has mark the
    device shared. Once one listed pid is the run's, every other one is foreign."""
    try:
        listed = nv.nvmlDeviceGetComputeRunningProcesses(dev.handle)
    except Exception as exc:  # NVMLError_NotSupported, NoPermission, or any other error
        dev.processes_error = f"compute processes cannot be listed: {describe_error(exc)}"
        return
    pids = list(dict.fromkeys(int(_plain(process.pid)) for process in listed))
    dev.processes = pids
    own = set(own_pids)
    foreign = [pid for pid in pids if pid not in own]
    if not foreign:
        return
    shown = ", ".join(str(pid) for pid in foreign)
    if len(foreign) < len(pids):
        why = f"(pids {shown})"
    elif len(pids) > len(own):
        why = (f"(pids {shown}, which may be pids from another PID namespace: "
               f"{len(pids)} listed, the run has {len(own)})")
    else:  # perhaps the run's own processes, numbered in another PID namespace
        return
    reason = f"NVML lists compute processes on this GPU that are not the run's {why}"
    if reason not in dev.sharing:
        dev.sharing.append(reason)


def handle_by_uuid(nv: Any, uuid: str) -> tuple[Any, int | None]:
    """The handle of the device with this UUID (torch gives it without NVML's ``GPU-`` or
    ``MIG-`` prefix: both are tried), or with the one UUID it is a prefix of (as
    ``CUDA_VISIBLE_DEVICES`` allows), and its NVML index where the search found it."""
    candidates = [uuid] if uuid.startswith(UUID_PREFIXES) else [p + uuid for p in UUID_PREFIXES]
    exact_error: Exception | None = None
    for candidate in candidates:
        try:
            return nv.nvmlDeviceGetHandleByUUID(candidate), None
        except Exception as error:
            exact_error = exact_error or error
    matches = []
    for i in range(try_call(nv.nvmlDeviceGetCount) or 0):
        handle = try_call(nv.nvmlDeviceGetHandleByIndex, i)
        other = None if handle is None else nvml_text(try_call(nv.nvmlDeviceGetUUID, handle))
        if other is not None and other.startswith(candidates[0]):
            matches.append((handle, i))
    if len(matches) == 1:
        return matches[0]
    raise exact_error


def normalise_spec(spec: Any) -> DeviceSpec:
    """An int index for ints, ``"3"`` and ``"cuda:3"``; the stripped string for a UUID."""
    if isinstance(spec, str):
        text = spec.strip()
        digits = text.removeprefix("cuda:")
        if digits.isascii() and digits.isdigit():
            return int(digits)
        if not text:
            raise ValueError("an empty string is not a GPU")
        return text
    if isinstance(spec, bool):
        raise TypeError(f"a GPU is a CUDA index or a UUID, not {spec!r}")
    try:
        index = operator.index(spec)
    except TypeError:
        raise TypeError(f"a GPU is a CUDA index or a UUID, not {spec!r}") from None
    if index < 0:
        raise ValueError(f"a CUDA device index cannot be negative: {index}")
    return index


def parse_visible_devices(raw: str | None) -> list[DeviceSpec] | None:
    """``CUDA_VISIBLE_DEVICES`` as a list of NVML indices and UUIDs; None when it is unset.

    As in CUDA, the list ends at the first entry that is neither (so ``-1`` hides every GPU).
    """
    if raw is None:
        return None
    visible: list[DeviceSpec] = []
    for entry in (part.strip() for part in raw.split(",")):
        if entry.isascii() and entry.isdigit():
            visible.append(int(entry))
        elif entry.startswith(("GPU-", "MIG-")):
            visible.append(entry)
        else:
            break
    return visible


def _plain(value: Any) -> Any:
    """A ctypes number's value (the binding returns some flags as ``c_uint``), else the value."""
    return getattr(value, "value", value)


def _flag(value: Any) -> bool:
    return value is not None and bool(_plain(value))


def try_call(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, or None if it raises: for details that are not worth failing on."""
    try:
        return function(*args)
    except Exception:
        return None


def nvml_text(value: Any) -> str | None:
    """NVML strings arrive as bytes or str depending on the binding's version."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def describe_error(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    return text or type(exc).__name__
