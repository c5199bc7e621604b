"""NvmlMeter on some of several GPUs, each device's own energy, and whether a GPU is the run's
alone: against the fake NVML of ``tests/nvml_fake.py``.

A GPU is ``shared_device`` when other processes compute on it (here), or when it is a MIG
instance or has MIG mode on (``test_nvml_hardware.py``, section MIG; one case here, for the
process list of a MIG instance). The real-GPU test of the process list is in
``test_nvml_hardware.py``.
"""

from __future__ import annotations

import os
from typing import Any

import pynvml
import pytest

from greenbench.energy.meters import GPU, NVML_COUNTER, NVML_SAMPLING, SHARED_DEVICE
from greenbench.energy.nvml import NvmlMeter
from tests.nvml_fake import UUIDS, FakeClock, FakeGpu, FakeNvml, hopper, nvml_error

ASLEEP = 1e-6  # sample_hz at which the thread never wakes during a test
FOUR = (*UUIDS, "GPU-dddd4444-0000")
MIG_UUID = "MIG-1f2e3d4c-0000-4000-8000-000000000001"
MEASURED = {"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetFieldValues"}
ENERGY_AND_POWER = {*MEASURED, "nvmlDeviceGetPowerUsage"}


def meter_on(fake: FakeNvml, devices: list[Any], **kwargs: Any) -> NvmlMeter:
    return NvmlMeter(devices, sample_hz=ASLEEP, clock=fake.clock, sleep=fake.clock.sleep,
                     **kwargs)


def started(fake: FakeNvml, devices: list[Any], **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """A meter on ``devices`` started, read once and stopped: (its reading, its details)."""
    meter = meter_on(fake, devices, **kwargs)
    meter.start()
    try:
        return meter.read()[GPU], meter.details()
    finally:
        meter.stop()


# 1. Some GPUs of several, and each one's energy.


def test_two_of_four_gpus_sum_exactly_those_two_and_never_read_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpus = [FakeGpu(uuid, energy_mj=1_000_000 * (i + 1)) for i, uuid in enumerate(FOUR)]
    fake = FakeNvml(*gpus).install(monkeypatch)
    meter = meter_on(fake, [FOUR[1], FOUR[3]])
    meter.start()
    try:
        assert [d["energy_j"] for d in meter.details()["devices"]] == [None, None]  # no read yet
        for gpu, more_mj in zip(gpus, (7_000, 123_456, 50_000, 1_001), strict=True):
            gpu.energy_mj += more_mj
        reading = meter.read()[GPU]
        devices = meter.details()["devices"]
    finally:
        meter.stop()
    assert [d["uuid"] for d in devices] == [FOUR[1], FOUR[3]]
    assert [d["energy_j"] for d in devices] == [123.456, 1.001]
    assert (reading.joules, reading.source, reading.faults) == (123.456 + 1.001, NVML_COUNTER, 0)
    assert reading.joules == sum(d["energy_j"] for d in devices)  # the same terms, exactly
    read = {uuid: {name for (of, name) in fake.device_calls if of == uuid} & ENERGY_AND_POWER
            for uuid in FOUR}
    assert read == {FOUR[0]: set(), FOUR[2]: set(),  # power: the instantaneous field
                    FOUR[1]: MEASURED, FOUR[3]: MEASURED}


def test_each_devices_energy_is_its_counter_or_its_integral_as_of_the_latest_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted = FakeGpu(UUIDS[0], energy_mj=0, power_mw=300_000)
    sampled = FakeGpu(UUIDS[1], energy_mj=None, power_mw=150_000, averaged_power_s=None)
    clock = FakeClock()
    fake = FakeNvml(counted, sampled, clock=clock).install(monkeypatch)
    meter = meter_on(fake, [0, 1])
    meter.start()
    try:
        began = clock.t
        base_mj = counted.counter_mj(began)
        clock.t = began + 2.0
        reading = meter.read()[GPU]
        clock.t = began + 3.0
        meter.sample()  # after the read: the integral grows, the recorded figure does not
        devices = meter.details()["devices"]
    finally:
        meter.stop()
    assert [d["source"] for d in devices] == [NVML_COUNTER, NVML_SAMPLING]
    counter_j = (counted.counter_mj(began + 2.0) - base_mj) / 1000
    assert counter_j > 0
    assert [d["energy_j"] for d in devices] == [counter_j, 300.0]  # 150 W for 2 s
    assert reading.joules == counter_j + 300.0 == sum(d["energy_j"] for d in devices)
    assert reading.source == NVML_SAMPLING  # not every device is on the counter


def test_after_stop_each_devices_energy_is_the_final_readings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpus = [FakeGpu(UUIDS[0], energy_mj=0), FakeGpu(UUIDS[1], energy_mj=0)]
    fake = FakeNvml(*gpus).install(monkeypatch)
    meter = meter_on(fake, [0, 1])
    meter.start()
    gpus[0].energy_mj, gpus[1].energy_mj = 2_500, 40
    meter.stop()
    gpus[0].energy_mj = 9_999_999
    assert meter.read()[GPU].joules == 2.54
    assert [d["energy_j"] for d in meter.details()["devices"]] == [2.5, 0.04]


# 2. Other processes on a GPU.


def test_a_foreign_compute_process_makes_the_gpu_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.getpid()
    fake = FakeNvml(FakeGpu(UUIDS[0], processes=[me, 424242]), FakeGpu(UUIDS[1])).install(
        monkeypatch)
    reading, details = started(fake, [0, 1])
    first, second = details["devices"]
    assert (first["processes"], first["scope"], first["processes_error"]) == (
        [me, 424242], SHARED_DEVICE, None)
    assert first["sharing"] == [
        "NVML lists compute processes on this GPU that are not the run's (pids 424242)"]
    assert (second["processes"], second["scope"], second["sharing"]) == ([], None, [])
    assert (details["scope"], reading.scope) == (SHARED_DEVICE, SHARED_DEVICE)
    assert reading.scope_reason == (
        "cuda:0: NVML lists compute processes on this GPU that are not the run's (pids 424242)")
    assert reading.measured  # shared, still measured


def test_the_runs_own_processes_do_not_make_a_gpu_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.getpid()
    fake = FakeNvml(FakeGpu(UUIDS[0], processes=[me])).install(monkeypatch)
    reading, details = started(fake, [0])
    (device,) = details["devices"]
    assert (device["processes"], device["scope"], device["sharing"]) == ([me], None, [])
    assert (reading.scope, reading.scope_reason) == (None, None)


@pytest.mark.parametrize(("listed", "foreign"), [
    ([1001, 1002], None),  # all the run's, given by own_pids
    ([1002], None),
    ([1001, 1002, 1003], "1003"),  # one of ours listed: every other pid is foreign
    ([1001, 7, 8], "7, 8"),
])
def test_own_pids_are_the_runs_processes(
    monkeypatch: pytest.MonkeyPatch, listed: list[int], foreign: str | None,
) -> None:
    fake = FakeNvml(FakeGpu(UUIDS[0], processes=listed)).install(monkeypatch)
    _, details = started(fake, [0], own_pids=[1001, 1002])
    (device,) = details["devices"]
    assert device["processes"] == listed
    assert device["sharing"] == ([] if foreign is None else [
        f"NVML lists compute processes on this GPU that are not the run's (pids {foreign})"])


@pytest.mark.parametrize(("own", "listed", "shared"), [
    ([os.getpid()], [], False),
    ([os.getpid()], [900001], False),  # perhaps this process by its host pid
    ([os.getpid()], [900001, 900002], True),  # more than the run has: someone else's too
    ([11, 12], [900001, 900002], False),
    ([11, 12], [900001, 900002, 900003], True),
])
def test_pids_of_another_namespace_count_only_beyond_the_runs_number(
    monkeypatch: pytest.MonkeyPatch, own: list[int], listed: list[int], shared: bool,
) -> None:
    fake = FakeNvml(FakeGpu(UUIDS[0], processes=listed)).install(monkeypatch)
    reading, details = started(fake, [0], own_pids=own)
    (device,) = details["devices"]
    assert (device["processes"], reading.scope) == (listed, SHARED_DEVICE if shared else None)
    pids = ", ".join(map(str, listed))
    assert device["sharing"] == ([
        f"NVML lists compute processes on this GPU that are not the run's (pids {pids}, which "
        f"may be pids from another PID namespace: {len(listed)} listed, the run has {len(own)})"
    ] if shared else [])


def test_own_pids_default_to_the_process_that_starts_the_meter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = FakeGpu(UUIDS[0])
    fake = FakeNvml(gpu).install(monkeypatch)
    meter = meter_on(fake, [0])
    gpu.processes = [os.getpid(), 31337]
    meter.start()
    try:
        gpu.processes = [os.getpid()]  # listed once, at start()
        reading = meter.read()[GPU]
    finally:
        meter.stop()
    assert reading.scope_reason == (
        "cuda:0: NVML lists compute processes on this GPU that are not the run's (pids 31337)")


def test_processes_that_cannot_be_listed_are_noted_and_share_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = FakeGpu(UUIDS[0], energy_mj=0)
    gpu.processes_error = nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    fake = FakeNvml(gpu).install(monkeypatch)
    reading, details = started(fake, [0])
    (device,) = details["devices"]
    assert (device["processes"], device["processes_error"]) == (
        None, "compute processes cannot be listed: Not Supported")
    assert (device["scope"], device["sharing"], reading.scope) == (None, [], None)
    assert (reading.measured, reading.faults) == (True, 0)


def test_a_mig_instances_processes_are_listed_on_its_whole_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = hopper(UUIDS[0], mig_instances=[MIG_UUID])
    gpu.migs[0].processes = [os.getpid()]
    fake = FakeNvml(gpu).install(monkeypatch)
    _, details = started(fake, [MIG_UUID])
    (device,) = details["devices"]
    assert (device["processes"], device["scope"], device["mig_uuid"]) == (
        [os.getpid()], SHARED_DEVICE, MIG_UUID)
    assert [why.split(":")[0] for why in device["sharing"]] == [f"a MIG instance ({MIG_UUID})"]
    assert fake.device_calls[UUIDS[0], "nvmlDeviceGetComputeRunningProcesses"] == 1

    gpu.processes = [5150]  # another tenant, outside the run's instance
    _, details = started(fake, [MIG_UUID])
    assert details["devices"][0]["sharing"][1] == (
        "NVML lists compute processes on this GPU that are not the run's (pids 5150)")
