"""NvmlMeter against the fake NVML of ``tests/nvml_fake.py``, plus one test on a real GPU.

The fake replaces pynvml's functions (the library boundary) and raises pynvml's own exception
classes. Its GPUs draw a settable power on the fake's clock, their energy counters integrate it
every ``counter_update_s`` of that clock (so a counter must move while ``start()`` times it, or
the device falls back to sampled power), and queues of errors can be raised on the next reads.
The clock is a value the test sets, and its ``sleep`` advances it, so the counter probe in
``start()`` costs no real time. The background thread is kept asleep (a tiny ``sample_hz``)
wherever exact numbers are asserted, and sampling is driven through ``NvmlMeter.sample()``; the
one test of the thread itself waits on call counts, never on time. Telemetry, periods and the
cross-check: ``test_nvml_telemetry.py``; the hardware's habits: ``test_nvml_hardware.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import pynvml
import pytest

from greenbench.energy.meters import GPU, NVML_COUNTER, NVML_SAMPLING, UNAVAILABLE
from greenbench.energy.nvml import NvmlMeter
from tests.nvml_fake import UUIDS, FakeClock, FakeGpu, FakeNvml, nvml_error

ASLEEP = 1e-6  # sample_hz at which the thread never wakes during a test


def gpu_reading(meter: NvmlMeter) -> Any:
    return meter.read()[GPU]


def fake_meter(devices: list[Any], clock: FakeClock | None = None, **kwargs: Any) -> NvmlMeter:
    """An NvmlMeter on the installed fake's clock (unless given), whose sleep advances it."""
    clock = FakeNvml.installed.clock if clock is None else clock
    return NvmlMeter(devices, clock=clock, sleep=clock.sleep, **kwargs)


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "greenbench-nvml-sampler"]


def test_nvml_error_classes_are_what_the_fake_raises() -> None:
    assert isinstance(nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED), pynvml.NVMLError_NotSupported)
    assert isinstance(
        nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND), pynvml.NVMLError_LibraryNotFound
    )


# 1. The energy counter.


def test_counter_path_sums_devices_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    first = FakeGpu(UUIDS[0], name=b"NVIDIA A100-SXM4-80GB", power_limit_mw=400_000)
    second = FakeGpu(UUIDS[1], power_limit_mw=700_000)
    first.energy_mj, second.energy_mj = 1_000_000, 5_000_000
    FakeNvml(first, second).install(monkeypatch)
    meter = fake_meter([0, 1], sample_hz=ASLEEP)
    meter.start()
    try:
        assert gpu_reading(meter).joules == 0.0
        first.energy_mj, second.energy_mj = 1_250_500, 5_100_000
        reading = gpu_reading(meter)
        assert reading.joules == 350.5
        assert (reading.source, reading.faults, reading.fault) == (NVML_COUNTER, 0, None)
        assert reading.measured
        first.energy_mj += 1_500
        assert gpu_reading(meter).joules == 352.0
        details = meter.details()
    finally:
        meter.stop()
    json.dumps(details)
    assert details["driver_version"] == "550.54.15"
    assert details["sample_hz"] == ASLEEP
    assert details["unavailable"] is None
    common = {"matched_by": "index", "cuda_device_order": "FASTEST_FIRST", "mig_uuid": None,
              "scope": None, "sharing": [], "source": NVML_COUNTER, "counter_error": None,
              "power_reading": "instant", "period_basis": "counter_updates",
              "cross_check_fault": None, "processes": [], "processes_error": None}
    assert details["power_reading"] == "instant" and details["scope"] is None
    assert [d.pop("period_s") for d in details["devices"]] == [pytest.approx(0.1)] * 2
    assert details["devices"] == [
        {"requested": [0], "label": "cuda:0", "index": 0, "uuid": UUIDS[0],
         "name": "NVIDIA A100-SXM4-80GB", "power_limit_w": 400.0, "energy_j": 252.0, **common},
        {"requested": [1], "label": "cuda:1", "index": 1, "uuid": UUIDS[1],
         "name": "NVIDIA H100 80GB HBM3", "power_limit_w": 700.0, "energy_j": 100.0, **common},
    ]


def test_counter_path_samples_power_in_a_thread_for_the_cross_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before issue 15 the counter path started no thread; now the thread samples its power for
    # Reading.cross_check_j (test_nvml_telemetry.py checks the numbers).
    FakeNvml(FakeGpu(UUIDS[0])).install(monkeypatch)
    meter = fake_meter([0])
    meter.start()
    assert len(sampler_threads()) == 1
    meter.stop()
    assert sampler_threads() == []


def test_details_that_fail_are_none(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(FakeGpu(UUIDS[0])).install(monkeypatch)

    def unsupported(*_: Any) -> Any:
        raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    for name in ("nvmlDeviceGetName", "nvmlDeviceGetEnforcedPowerLimit"):
        monkeypatch.setattr(pynvml, name, unsupported)
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", unsupported)
    meter = fake_meter([0], sample_hz=ASLEEP)
    meter.start()
    fake.gpus[0].energy_mj = 2_000
    assert gpu_reading(meter).joules == 2.0
    details = meter.details()
    meter.stop()
    assert details["driver_version"] is None
    assert details["devices"][0]["name"] is None
    assert details["devices"][0]["power_limit_w"] is None


# 2. Power sampling.


def test_power_sampling_integrates_trapezoids_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(UUIDS[0], energy_mj=None, power_mw=100_000)
    clock = FakeClock(10.0)
    fake = FakeNvml(gpu, clock=clock).install(monkeypatch)
    meter = NvmlMeter([0], sample_hz=ASLEEP, clock=clock)
    meter.start()  # first sample: 100 W at t = 10
    try:
        clock.t, gpu.power_mw = 10.5, 200_000
        meter.sample()  # (100 + 200) / 2 W x 0.5 s
        clock.t, gpu.power_mw = 11.0, 300_000
        before = fake.power_reads
        reading = gpu_reading(meter)  # read samples at t = 11 itself: (200 + 300) / 2 x 0.5
        assert fake.power_reads == before + 1
        assert reading.joules == 75.0 + 125.0
        assert (reading.source, reading.faults) == (NVML_SAMPLING, 0)
        assert reading.measured
        assert gpu_reading(meter).joules == 200.0  # same instant: nothing more
        clock.t = 13.0
        assert gpu_reading(meter).joules == 200.0 + 600.0  # 300 W for 2 s
        details = meter.details()
    finally:
        meter.stop()
    assert details["devices"][0]["source"] == NVML_SAMPLING
    assert details["devices"][0]["counter_error"] == "Not Supported"


def test_force_sampling_ignores_a_working_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(UUIDS[0], energy_mj=0, power_mw=250_000)
    clock = FakeClock()
    FakeNvml(gpu, clock=clock).install(monkeypatch)
    meter = NvmlMeter([0], sample_hz=ASLEEP, clock=clock, force_sampling=True)
    meter.start()
    gpu.energy_mj, clock.t = 999_999, 4.0
    reading = gpu_reading(meter)
    meter.stop()
    assert (reading.joules, reading.source) == (1000.0, NVML_SAMPLING)
    assert meter.details()["devices"][0]["counter_error"] == "sampling forced"


def test_sampling_thread_samples_and_survives_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(UUIDS[0], energy_mj=None, power_mw=150_000)
    fake = FakeNvml(gpu).install(monkeypatch)
    # Read 1 is start()'s; the thread's read 2 fails, its reads 3 (which restarts the integral)
    # and 4 are good, all at t = 0. The sample that makes read 4 read the clock before it.
    fake.power_failures[2] = nvml_error(pynvml.NVML_ERROR_UNKNOWN)
    fake.wake_at = 4
    clock = fake.clock
    meter = NvmlMeter([0], sample_hz=1000.0, clock=clock)
    meter.start()
    try:
        assert fake.power_read_event.wait(5.0), "the sampling thread took no samples"
        assert len(sampler_threads()) == 1
        clock.t = 2.0
        reading = gpu_reading(meter)
        assert reading.joules == 300.0  # 150 W x 2 s, however many samples the thread took
        assert reading.faults == 1
        assert reading.fault == "cuda:0: power read failed: Unknown Error"
    finally:
        meter.stop()
    assert sampler_threads() == []


# 3. Counter on one GPU, sampling on another.


def test_mixed_paths_are_summed_and_labelled(monkeypatch: pytest.MonkeyPatch) -> None:
    volta = FakeGpu(UUIDS[0], energy_mj=7_000)
    pascal = FakeGpu(UUIDS[1], name="Tesla P100-PCIE-16GB", energy_mj=None, power_mw=100_000)
    clock = FakeClock()
    FakeNvml(volta, pascal, clock=clock).install(monkeypatch)
    meter = fake_meter([0, 1], clock, sample_hz=ASLEEP)
    meter.start()
    started = clock.t  # after the counter probe (fake time)
    try:
        volta.energy_mj, clock.t = 47_000, started + 2.0
        reading = gpu_reading(meter)
        details = meter.details()
    finally:
        meter.stop()
    # the scripted 40 J, the counter's own 100 W for 2 s, the sampled GPU's 100 W for 2 s
    assert reading.joules == 40.0 + 200.0 + 200.0
    assert reading.source == NVML_SAMPLING  # not every device has the counter
    assert [d["source"] for d in details["devices"]] == [NVML_COUNTER, NVML_SAMPLING]
    assert [d["counter_error"] for d in details["devices"]] == [None, "Not Supported"]


# 4. NVML errors in the middle of a run.


def test_counter_read_error_is_a_fault_and_the_next_read_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = FakeGpu(UUIDS[0], energy_mj=100_000)
    FakeNvml(gpu).install(monkeypatch)
    meter = fake_meter([0], sample_hz=ASLEEP)
    meter.start()
    try:
        gpu.energy_mj = 110_000
        assert (gpu_reading(meter).joules, gpu_reading(meter).faults) == (10.0, 0)
        gpu.energy_mj = 130_000
        gpu.energy_errors.append(nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST))
        failed = gpu_reading(meter)
        assert (failed.joules, failed.faults) == (10.0, 1)  # last good value, no jump, no zero
        assert failed.fault == "cuda:0: energy counter read failed: GPU is lost"
        recovered = gpu_reading(meter)
        assert (recovered.joules, recovered.faults) == (30.0, 1)  # the counter kept counting
        assert recovered.fault == failed.fault
        assert recovered.source == NVML_COUNTER
    finally:
        meter.stop()


def test_sampling_error_is_a_fault_and_the_gap_is_not_guessed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = FakeGpu(UUIDS[0], energy_mj=None, power_mw=100_000)
    clock = FakeClock()
    FakeNvml(gpu, clock=clock).install(monkeypatch)
    meter = NvmlMeter([0], sample_hz=ASLEEP, clock=clock)
    meter.start()
    try:
        clock.t = 1.0
        meter.sample()
        assert gpu_reading(meter).joules == 100.0
        gpu.power_errors.append(nvml_error(pynvml.NVML_ERROR_UNKNOWN))
        clock.t = 2.0
        meter.sample()  # fails: the integral stays
        failed = gpu_reading(meter)  # a fresh sample at t = 2 restarts integration
        assert (failed.joules, failed.faults) == (100.0, 1)
        assert failed.fault == "cuda:0: power read failed: Unknown Error"
        clock.t = 3.0
        assert (gpu_reading(meter).joules, gpu_reading(meter).faults) == (200.0, 1)
    finally:
        meter.stop()


def test_every_failed_read_is_a_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(UUIDS[0], energy_mj=0)
    FakeNvml(gpu).install(monkeypatch)
    meter = fake_meter([0], sample_hz=ASLEEP)
    meter.start()
    gpu.energy_errors.extend([nvml_error(pynvml.NVML_ERROR_UNKNOWN)] * 2)
    assert [gpu_reading(meter).faults for _ in range(3)] == [1, 2, 2]
    meter.stop()


# 5. A counter that goes backwards.


def test_counter_reset_is_a_fault_and_rebases(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(UUIDS[0], energy_mj=5_000_000)
    fake = FakeNvml(gpu).install(monkeypatch)
    meter = fake_meter([0], sample_hz=ASLEEP)
    meter.start()
    ticks = gpu.counter_mj(fake.clock.t) - gpu.energy_mj  # what it counted during start()
    try:
        gpu.energy_mj = 5_010_000
        before = gpu_reading(meter)
        assert (before.joules, before.faults) == (10.0, 0)
        gpu.energy_mj = 2_000  # driver reloaded
        reset = gpu_reading(meter)
        assert (reset.joules, reset.faults) == (10.0, 1)  # the unknown gap is not guessed
        assert reset.fault is not None
        assert reset.fault.startswith(
            f"cuda:0: energy counter went backwards ({5_010_000 + ticks} -> {2_000 + ticks} mJ)")
        gpu.energy_mj = 7_000
        after = gpu_reading(meter)
        assert (after.joules, after.faults) == (15.0, 1)
        gpu.energy_mj = 10_500
        later = gpu_reading(meter)
        assert later.joules - after.joules == 3.5  # windows after the reset are exact again
        assert later.faults == after.faults
    finally:
        meter.stop()


# 6. No NVML.


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "NVML library not found"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "NVIDIA driver not loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "NVML failed to initialise: Insufficient Permissions"),
    ],
)
def test_nvml_init_failure_makes_the_gpu_unavailable(
    monkeypatch: pytest.MonkeyPatch, code: int, reason: str
) -> None:
    fake = FakeNvml(FakeGpu(UUIDS[0]), init_error=nvml_error(code)).install(monkeypatch)
    meter = NvmlMeter([0])
    meter.start()
    reading = gpu_reading(meter)
    assert (reading.joules, reading.source, reading.fault) == (None, UNAVAILABLE, reason)
    assert not reading.measured
    assert meter.details()["unavailable"] == reason
    meter.stop()
    meter.stop()
    assert fake.shutdowns == 0  # never initialised, so never shut down
    assert gpu_reading(meter).source == UNAVAILABLE


def test_missing_pynvml_makes_the_gpu_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    meter = NvmlMeter([0])
    meter.start()
    reading = gpu_reading(meter)
    meter.stop()
    assert (reading.joules, reading.source) == (None, UNAVAILABLE)
    assert reading.fault == "nvidia-ml-py (pynvml) is not installed"


def test_a_gpu_that_reads_neither_energy_nor_power_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = FakeGpu(UUIDS[0], energy_mj=None, power_supported=False)
    fake = FakeNvml(FakeGpu(UUIDS[1]), gpu).install(monkeypatch)
    meter = fake_meter([0, 1])
    meter.start()
    reading = gpu_reading(meter)
    assert (reading.joules, reading.source) == (None, UNAVAILABLE)
    assert reading.fault == (
        "cuda:1: neither energy counter (Not Supported) nor power (Not Supported) can be read"
    )
    assert fake.shutdowns == 1  # released at once
    assert sampler_threads() == []
    meter.stop()
    assert fake.shutdowns == 1


# 7. No GPU.


def test_no_devices_is_unavailable_without_touching_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(FakeGpu(UUIDS[0])).install(monkeypatch)
    meter = NvmlMeter([])
    meter.start()
    reading = gpu_reading(meter)
    meter.stop()
    assert (reading.joules, reading.source, reading.fault) == (None, UNAVAILABLE, "no GPU in use")
    assert (fake.inits, fake.shutdowns) == (0, 0)


# 8. Which GPU an index means.


def three_gpus(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    gpus = [FakeGpu(uuid, energy_mj=1000 * (i + 1)) for i, uuid in enumerate(UUIDS)]
    return FakeNvml(*gpus).install(monkeypatch)


def indices_of(devices: list[Any]) -> list[int]:
    meter = fake_meter(devices, sample_hz=ASLEEP)
    meter.start()
    details = meter.details()
    meter.stop()
    assert details["unavailable"] is None, details["unavailable"]
    return [device["index"] for device in details["devices"]]


def test_cuda_visible_devices_maps_cuda_to_nvml_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    three_gpus(monkeypatch)
    assert indices_of([0, 1]) == [0, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert indices_of([0, 1]) == [2, 0]
    assert indices_of(["cuda:1", "0"]) == [0, 2]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{UUIDS[2]}, 1")
    assert indices_of([0, 1]) == [2, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-cccc")  # a unique prefix, as CUDA allows
    assert indices_of([0]) == [2]


def test_uuid_names_a_gpu_whatever_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    three_gpus(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert indices_of([UUIDS[1]]) == [1]


def test_invisible_index_makes_the_gpu_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = three_gpus(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")  # CUDA stops at the invalid entry
    meter = NvmlMeter([1])
    meter.start()
    reading = gpu_reading(meter)
    meter.stop()
    assert reading.source == UNAVAILABLE
    assert reading.fault == "cuda:1 is not visible (CUDA_VISIBLE_DEVICES='1,-1,2')"
    assert fake.shutdowns == 1


def test_unknown_uuid_makes_the_gpu_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    three_gpus(monkeypatch)
    meter = NvmlMeter(["GPU-dddd"])
    meter.start()
    reading = gpu_reading(meter)
    meter.stop()
    assert reading.fault == "GPU-dddd: NVML cannot open it (Not Found)"


def test_the_same_gpu_named_twice_is_measured_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = three_gpus(monkeypatch)
    meter = fake_meter([1, UUIDS[1]], sample_hz=ASLEEP)
    meter.start()
    fake.gpus[1].energy_mj += 4_000
    reading = gpu_reading(meter)
    details = meter.details()
    meter.stop()
    assert reading.joules == 4.0
    assert [d["requested"] for d in details["devices"]] == [[1, UUIDS[1]]]


@pytest.mark.parametrize(
    ("devices", "error"),
    [([-1], ValueError), ([True], TypeError), ([1.5], TypeError), ([" "], ValueError)],
)
def test_bad_device_specs_are_rejected(devices: list[Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        NvmlMeter(devices)


@pytest.mark.parametrize("hz", [0.0, -1.0, float("nan"), float("inf"), 10_000.0])
def test_bad_sample_rates_are_rejected(hz: float) -> None:
    with pytest.raises(ValueError, match="sample_hz"):
        NvmlMeter([0], sample_hz=hz)


# 9. Stopping.


def test_stop_is_idempotent_and_freezes_the_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = FakeGpu(UUIDS[0], energy_mj=0)
    sampled = FakeGpu(UUIDS[1], energy_mj=None, power_mw=50_000)
    clock = FakeClock()
    fake = FakeNvml(counted, sampled, clock=clock).install(monkeypatch)
    meter = fake_meter([0, 1], clock, sample_hz=ASLEEP)
    meter.stop()  # before start: nothing to do
    meter.start()
    started = clock.t  # after the counter probe (fake time)
    assert len(sampler_threads()) == 1
    counted.energy_mj, clock.t = 3_000, started + 2.0
    meter.stop()
    assert sampler_threads() == []
    assert fake.shutdowns == 1
    reads = fake.power_reads
    counted.energy_mj, clock.t = 9_000, started + 5.0
    meter.stop()
    meter.sample()
    final = gpu_reading(meter)
    # as at stop(): 3 J scripted and 200 J counted by the counter's GPU, 100 J by the sampled
    assert (final.joules, final.source) == (3.0 + 200.0 + 100.0, NVML_SAMPLING)
    assert fake.shutdowns == 1
    assert fake.power_reads == reads  # NVML is not touched after stop()
    with pytest.raises(RuntimeError):
        meter.start()


def test_read_before_start_is_unavailable() -> None:
    reading = gpu_reading(NvmlMeter([0]))
    assert (reading.joules, reading.source) == (None, UNAVAILABLE)


# 10. Importing is cheap.


def test_import_pulls_in_neither_torch_nor_pynvml() -> None:
    code = (
        "import sys, greenbench.energy.nvml; "
        "print(sorted(m for m in ('torch', 'pynvml') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# On a real GPU.


@pytest.mark.gpu
def test_real_nvml_counter_on_this_gpu() -> None:
    import torch

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"NVML does not initialise: {exc}")
    pynvml.nvmlShutdown()

    device = torch.device("cuda", 0)
    a = torch.randn(8192, 8192, device=device)
    b = torch.randn(8192, 8192, device=device)

    def burn(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(8):
                a @ b
            torch.cuda.synchronize(device)

    burn(1.5)  # power is steady before the window opens
    counter = NvmlMeter([0])
    sampler = NvmlMeter([0], sample_hz=50.0, force_sampling=True)
    counter.start()
    sampler.start()
    try:
        first = (gpu_reading(counter), gpu_reading(sampler))
        opened = time.monotonic()
        burn(4.0)
        last = (gpu_reading(counter), gpu_reading(sampler))
        elapsed = time.monotonic() - opened
        telemetry = counter.telemetry()
    finally:
        counter.stop()
        sampler.stop()

    volta_or_newer = torch.cuda.get_device_capability(device) >= (7, 0)
    assert last[0].source == (NVML_COUNTER if volta_or_newer else NVML_SAMPLING)
    assert last[1].source == NVML_SAMPLING
    assert last[0].faults == first[0].faults and last[1].faults == first[1].faults
    counted = last[0].joules - first[0].joules
    sampled = last[1].joules - first[1].joules
    assert elapsed >= 3.0
    assert counted > 0 and sampled > 0
    assert abs(counted - sampled) <= 0.05 * counted, (counted, sampled, elapsed)
    assert telemetry is not None and len(telemetry) == 1
    (state,) = telemetry.values()
    assert state["temperature_c"] is not None and state["sm_clock_mhz"], state
    reading = sampler.details()["power_reading"]
    assert sampler.period_s == (1 / 50.0 if reading == "instant" else 1.0)  # averaged: 1 s
    if volta_or_newer:  # the counter's own update period, and the power-sampled cross-check
        assert counter.period_s is not None and 0 < counter.period_s <= 0.5
        assert first[0].cross_check_j is not None and last[0].cross_check_j is not None
        checked = last[0].cross_check_j - first[0].cross_check_j
        assert abs(counted - checked) <= 0.05 * counted, (counted, checked, elapsed)
