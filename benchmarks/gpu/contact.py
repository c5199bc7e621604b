"""The first-contact sections that touch the GPU, each run by ``first_contact.py`` in a process
of its own (so that a hung call can be ended, and so that the fork check starts clean):

* ``device``: what torch and NVML say the GPU is, its MIG mode, who else runs on it, which
  readings it offers, and how greenbench's meter would measure it;
* ``fork``: the warm fork server's imports (``greenbench.point.server.warm_up``), then a forked
  point that opens NVML and reads the energy counter;
* ``trace``: power (averaged and instantaneous) and the counter at 50 Hz across idle, matrix
  products and idle again (``trace.py``).

Each returns a JSON-ready dict; what cannot be read is None with the reason beside it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from typing import Any

from benchmarks.gpu.trace import TRACE_HZ, Tracer, analyse

FORK_READ_S = 2.0  # how long the forked point measures
IDLE_S, BUSY_S, TAIL_S = 3.0, 5.0, 4.0  # the trace: idle, matrix products, idle again


def device(spec: int | str | None) -> dict[str, Any]:
    import torch

    from benchmarks.gpu.common import cuda0
    from greenbench.energy.nvml import NvmlMeter
    from greenbench.energy.nvml_devices import (
        describe_error,
        initialise_nvml,
        normalise_spec,
        nvml_text,
        open_device,
        parse_visible_devices,
    )
    from greenbench.energy.nvml_power import instant_power_mw

    spec = cuda0() if spec is None else spec
    props = torch.cuda.get_device_properties(0)
    found: dict[str, Any] = {
        "torch_name": torch.cuda.get_device_name(0), "torch_uuid": str(props.uuid),
        "nvml_device": spec, "count": torch.cuda.device_count(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "capability": f"{props.major}.{props.minor}",
    }
    nv = initialise_nvml()
    try:
        dev = open_device(nv, normalise_spec(spec),
                          parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES")))
        found.update(nvml_uuid=dev.uuid, nvml_index=dev.index, mig_uuid=dev.mig_uuid,
                     sharing=dev.sharing, driver=nvml_text(_read(nv.nvmlSystemGetDriverVersion)))
        found["mig_mode"] = _read(lambda: list(nv.nvmlDeviceGetMigMode(dev.handle)))
        processes = _read(lambda: nv.nvmlDeviceGetComputeRunningProcesses(dev.handle))
        found["compute_processes"] = processes if isinstance(processes, str) else [
            {"pid": p.pid, "used_gpu_memory": getattr(p, "usedGpuMemory", None)}
            for p in processes]
        found["counter_mj"] = _read(lambda: nv.nvmlDeviceGetTotalEnergyConsumption(dev.handle))
        found["instant_mw"] = _read(lambda: instant_power_mw(nv, dev.handle))
        found["averaged_mw"] = _read(lambda: nv.nvmlDeviceGetPowerUsage(dev.handle))
    except Exception as error:
        found["nvml_error"] = describe_error(error)
    finally:
        nv.nvmlShutdown()
    meter = NvmlMeter([spec])
    meter.start()
    details = meter.details()
    meter.stop()
    found["meter"] = details
    return found


def fork(spec: int | str) -> dict[str, Any]:
    """The fork server's imports, then a point forked from them measuring for FORK_READ_S."""
    from greenbench.point import server

    began = time.perf_counter()
    closed = server.warm_up()
    found: dict[str, Any] = {"import_s": round(time.perf_counter() - began, 2),
                             "sessions_closed": closed}
    nv = sys.modules.get("pynvml")
    found["sessions_open_at_fork"] = getattr(nv, "_nvmlLib_refcount", None)
    torch = sys.modules.get("torch")
    found["cuda_initialized_at_fork"] = bool(torch and torch.cuda.is_initialized())
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the point
        os.close(read_end)
        os.write(write_end, json.dumps(_forked_point(spec)).encode())
        os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], FORK_READ_S + 30)
    data = os.read(read_end, 1 << 20) if ready else b""
    os.close(read_end)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    found["point"] = json.loads(data) if data else {"error": "the point sent nothing in time"}
    return found


def _forked_point(spec: int | str) -> dict[str, Any]:
    try:
        from greenbench.energy.nvml import NvmlMeter

        meter = NvmlMeter([spec])
        meter.start()
        time.sleep(FORK_READ_S)
        reading, details = meter.read()["gpu"], meter.details()
        meter.stop()
        mean_w = None if reading.joules is None else round(reading.joules / FORK_READ_S, 1)
        return {"source": reading.source, "joules": reading.joules, "seconds": FORK_READ_S,
                "mean_w": mean_w,
                "faults": reading.faults, "fault": reading.fault,
                "unavailable": details["unavailable"],
                "period_s": details["period_s"], "power_reading": details["power_reading"]}
    except BaseException as error:
        return {"error": f"{type(error).__name__}: {error}"}


def trace(spec: int | str) -> dict[str, Any]:
    """Idle, matrix products, idle, logged at TRACE_HZ in a thread while this one loads the
    GPU; the rows, when the load began and ended, and the analysis."""
    from benchmarks.gpu.load import MatmulLoad
    from greenbench.energy.nvml_devices import (
        initialise_nvml,
        normalise_spec,
        open_device,
        parse_visible_devices,
    )

    load = MatmulLoad()
    load.calibrate()
    time.sleep(2.0)  # back to idle after the calibration
    nv = initialise_nvml()
    try:
        dev = open_device(nv, normalise_spec(spec),
                          parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES")))
        tracer = Tracer(nv, dev.handle, time.perf_counter)
        tracer.start(TRACE_HZ)
        try:
            time.sleep(IDLE_S)
            busy_start = tracer.now()
            products = load.run_for(BUSY_S)
            busy_end = tracer.now()
            time.sleep(TAIL_S)
        finally:
            tracer.stop()
    finally:
        nv.nvmlShutdown()
        load.release()
    return {"rows": tracer.rows, "busy_start_s": round(busy_start, 4),
            "busy_end_s": round(busy_end, 4), "target_hz": TRACE_HZ,
            "matmul_tflops": round(load.tflops(products, busy_end - busy_start), 1),
            "matmul_dtype": load.dtype_name, "matmul_n": load.n,
            "analysis": analyse(tracer.rows, busy_start, busy_end)}


def _read(read: Any) -> Any:
    """What ``read()`` returns, or the reason it failed (a string)."""
    try:
        return read()
    except Exception as error:
        return f"not readable: {type(error).__name__}: {error}"


SECTIONS = {"device": device, "fork": fork, "trace": trace}
