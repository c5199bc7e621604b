"""NvmlMeter's period, cross-check, telemetry and temperatures, against the fake NVML of
``tests/nvml_fake.py`` (a fake clock whose sleep advances it, counters that update on their
own)."""

from __future__ import annotations

import json
from typing import Any

import pynvml
import pytest

from greenbench.energy.meters import NVML_COUNTER, NVML_SAMPLING
from greenbench.energy.nvml import NvmlMeter
from tests.nvml_fake import UUIDS, FakeClock, FakeGpu, FakeNvml, nvml_error
from tests.test_nvml import ASLEEP, fake_meter, gpu_reading, sampler_threads


def ticking_gpu(uuid: str = UUIDS[0], **kwargs: Any) -> FakeGpu:
    """A GPU whose counter updates every 100 ms of the fake clock, as recent GPUs' do."""
    return FakeGpu(uuid, counter_update_s=0.1, **kwargs)


def unsupported(*_: Any) -> Any:
    raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)


# 1. period_s.


def test_the_counter_period_is_timed_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    gpu = ticking_gpu(power_mw=200_000)
    FakeNvml(gpu, clock=clock).install(monkeypatch)
    meter = fake_meter([0], clock, sample_hz=ASLEEP)
    assert meter.period_s is None  # not started
    meter.start()
    try:
        assert meter.period_s == pytest.approx(0.1, abs=0.005)
        assert clock.t < 0.5  # the probe stops once it has seen enough changes, not at its bound
        assert gpu_reading(meter).joules == 0.0  # joules count from the end of start()
        clock.t += 1.0
        assert gpu_reading(meter).joules == pytest.approx(200.0)  # 200 W for 1 s
        details = meter.details()
    finally:
        meter.stop()
    assert details["period_s"] == meter.period_s  # still known after stop()
    assert details["counter_probe_s"] == 0.5
    device = details["devices"][0]
    assert device["period_s"] == pytest.approx(0.1, abs=0.005)
    assert device["period_basis"] == "counter_updates"


def test_a_counter_that_stands_still_falls_back_to_sampled_power(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    gpu = FakeGpu(UUIDS[0], energy_mj=123, counter_update_s=None, power_mw=200_000)
    FakeNvml(gpu, clock=clock).install(monkeypatch)
    meter = fake_meter([0], clock, sample_hz=ASLEEP)
    meter.start()
    started = clock.t
    assert started == pytest.approx(0.5, abs=0.005)  # start() waited no longer than the bound
    clock.t += 2.0
    reading = gpu_reading(meter)
    details = meter.details()
    meter.stop()
    assert (reading.source, reading.joules) == (NVML_SAMPLING, 400.0)  # 200 W for 2 s, not 0 J
    device = details["devices"][0]
    assert device["source"] == NVML_SAMPLING
    assert device["counter_error"].startswith(
        "the energy counter did not change in 0.5 s of polling (")
    assert (device["period_basis"], meter.period_s) == ("sample_hz", 1 / ASLEEP)


def test_a_clock_that_does_not_advance_cannot_hang_the_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FakeNvml(FakeGpu(UUIDS[0])).install(monkeypatch)
    sleeps: list[float] = []
    meter = NvmlMeter([0], sample_hz=ASLEEP, clock=FakeClock(), sleep=sleeps.append)
    meter.start()
    meter.stop()
    assert 0 < len(sleeps) < 1000
    device = meter.details()["devices"][0]  # the counter never moved: in this clock, no time
    assert (device["source"], device["period_basis"]) == (NVML_SAMPLING, "sample_hz")


def test_counter_errors_during_the_probe_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    gpu = ticking_gpu()
    FakeNvml(gpu, clock=clock).install(monkeypatch)
    meter = fake_meter([0], clock, sample_hz=ASLEEP)
    original = pynvml.nvmlDeviceGetTotalEnergyConsumption
    reads = 0

    def flaky(handle: Any) -> int:  # the path check's read works, the probe's next 3 fail
        nonlocal reads
        reads += 1
        if 2 <= reads <= 4:
            raise nvml_error(pynvml.NVML_ERROR_UNKNOWN)
        return original(handle)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", flaky)
    meter.start()
    try:
        reading = gpu_reading(meter)
    finally:
        meter.stop()
    assert (reading.source, reading.faults, reading.joules) == (NVML_COUNTER, 0, 0.0)
    assert meter.period_s == pytest.approx(0.1, abs=0.005)


def test_a_sampled_device_has_the_sampling_period(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    FakeNvml(FakeGpu(UUIDS[0], energy_mj=None), clock=clock).install(monkeypatch)
    meter = fake_meter([0], clock, sample_hz=4.0)
    meter.start()
    details = meter.details()
    meter.stop()
    assert meter.period_s == 0.25
    assert clock.sleeps == 0  # no counter, no probe
    assert (details["devices"][0]["period_s"], details["devices"][0]["period_basis"]) == (
        0.25,
        "sample_hz",
    )


@pytest.mark.parametrize(("sample_hz", "period_s"), [(5.0, 0.2), (20.0, 0.1)])
def test_the_slowest_device_sets_the_period(
    monkeypatch: pytest.MonkeyPatch, sample_hz: float, period_s: float
) -> None:
    clock = FakeClock()
    FakeNvml(ticking_gpu(), FakeGpu(UUIDS[1], energy_mj=None), clock=clock).install(monkeypatch)
    meter = fake_meter([0, 1], clock, sample_hz=sample_hz)
    meter.start()
    meter.stop()
    assert meter.period_s == pytest.approx(period_s, abs=0.005)
    assert meter.details()["period_s"] == meter.period_s


def test_no_period_when_the_gpus_are_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    init_error = nvml_error(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    FakeNvml(FakeGpu(UUIDS[0]), init_error=init_error).install(monkeypatch)
    meter = fake_meter([0])
    meter.start()
    assert (meter.period_s, meter.details()["period_s"]) == (None, None)
    meter.stop()


# 2. The cross-check.


@pytest.mark.parametrize("gain", [1.0, 1.1])
def test_the_cross_check_integrates_power_beside_the_counter(
    monkeypatch: pytest.MonkeyPatch, gain: float
) -> None:
    clock = FakeClock()
    gpu = ticking_gpu(power_mw=250_000, power_read_gain=gain)  # 1.1: power reads 10 % high
    FakeNvml(gpu, clock=clock).install(monkeypatch)
    meter = fake_meter([0], clock, sample_hz=ASLEEP)
    meter.start()
    started = clock.t
    try:
        for step in range(1, 101):  # 10 s at 10 Hz
            clock.t = started + step / 10
            meter.sample()
        reading = gpu_reading(meter)
    finally:
        meter.stop()
    assert (reading.source, reading.faults) == (NVML_COUNTER, 0)
    assert reading.joules == pytest.approx(2500.0, rel=0.01)  # the counter: 250 W x 10 s
    assert reading.cross_check_j == pytest.approx(gain * reading.joules, rel=0.01)


def test_no_cross_check_without_a_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    FakeNvml(FakeGpu(UUIDS[0], energy_mj=None), FakeGpu(UUIDS[1]), clock=clock).install(monkeypatch)
    sampled = fake_meter([0], clock, sample_hz=ASLEEP)
    forced = fake_meter([1], clock, sample_hz=ASLEEP, force_sampling=True)
    for meter in (sampled, forced):
        meter.start()
        clock.t += 1.0
        reading = gpu_reading(meter)
        meter.stop()
        assert (reading.source, reading.joules, reading.cross_check_j) == (
            NVML_SAMPLING,
            100.0,
            None,
        )


def test_the_cross_check_sums_the_counter_devices_only(monkeypatch: pytest.MonkeyPatch) -> None:
    volta = FakeGpu(UUIDS[0], energy_mj=7_000, power_mw=100_000)
    pascal = FakeGpu(UUIDS[1], energy_mj=None, power_mw=50_000)
    clock = FakeClock()
    FakeNvml(volta, pascal, clock=clock).install(monkeypatch)
    meter = fake_meter([0, 1], clock, sample_hz=ASLEEP)
    meter.start()
    volta.energy_mj, clock.t = 207_000, clock.t + 2.0
    reading = gpu_reading(meter)
    meter.stop()
    # the scripted 200 J and the volta's own 100 W for 2 s, counted; the pascal's 50 W, sampled
    assert reading.joules == 200.0 + 200.0 + 100.0
    assert reading.cross_check_j == 200.0  # the volta's 100 W x 2 s, not the pascal's


def test_a_power_failure_ends_the_cross_check_not_the_counter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpus = [FakeGpu(UUIDS[0], energy_mj=0), FakeGpu(UUIDS[1], energy_mj=0)]
    clock = FakeClock()
    fake = FakeNvml(*gpus, clock=clock).install(monkeypatch)
    meter = fake_meter([0, 1], clock, sample_hz=ASLEEP)
    meter.start()
    try:
        clock.t += 1.0
        assert gpu_reading(meter).cross_check_j == 200.0
        gpus[1].power_errors.append(nvml_error(pynvml.NVML_ERROR_UNKNOWN))
        meter.sample()
        gpus[0].energy_mj = gpus[1].energy_mj = 5_000
        clock.t += 1.0
        reading = gpu_reading(meter)
        # 5 J scripted on each, and both GPUs' 100 W for 2 s
        assert (reading.joules, reading.source) == (10.0 + 400.0, NVML_COUNTER)
        assert (reading.faults, reading.fault) == (0, None)  # the counter reading stands
        assert reading.cross_check_j is None  # one device's integral has a gap: no sum
        reads = fake.power_reads
        meter.sample()
        assert fake.power_reads == reads + 1  # the failed device is sampled no more
        details = meter.details()
    finally:
        meter.stop()
    assert [d["cross_check_fault"] for d in details["devices"]] == [
        None,
        "power read failed: Unknown Error",
    ]


def test_power_unreadable_at_start_leaves_the_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(UUIDS[0], energy_mj=0, power_supported=False)
    FakeNvml(gpu).install(monkeypatch)
    meter = fake_meter([0], sample_hz=ASLEEP)
    meter.start()
    try:
        assert sampler_threads() == []  # nothing to sample
        gpu.energy_mj = 3_000
        reading = gpu_reading(meter)
        details = meter.details()
    finally:
        meter.stop()
    assert (reading.joules, reading.source, reading.faults) == (3.0, NVML_COUNTER, 0)
    assert reading.cross_check_j is None
    assert details["unavailable"] is None
    assert details["devices"][0]["cross_check_fault"] == "power cannot be read: Not Supported"


# 3. Telemetry and temperatures.


def test_telemetry_reads_each_device_now(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = [FakeGpu(UUIDS[0]), FakeGpu(UUIDS[1], power_limit_mw=400_000, pstate=8)]
    FakeNvml(*gpus).install(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    meter = fake_meter([0, 1], sample_hz=ASLEEP)
    meter.start()
    try:
        first = meter.telemetry()
        gpus[0].temperature_c, gpus[0].sm_clock_mhz, gpus[0].pstate = 71, 1410, 2
        gpus[0].power_limit_mw = 300_000
        second = meter.telemetry()
        labels = [d["label"] for d in meter.details()["devices"]]
    finally:
        meter.stop()
    assert labels == ["cuda:0 (NVML 1)", "cuda:1 (NVML 0)"]
    assert first is not None and second is not None
    json.dumps(first)
    assert first == {
        "cuda:0 (NVML 1)": {
            "temperature_c": 45.0,
            "sm_clock_mhz": 1980.0,
            "power_limit_w": 400.0,
            "pstate": "P8",
        },
        "cuda:1 (NVML 0)": {
            "temperature_c": 45.0,
            "sm_clock_mhz": 1980.0,
            "power_limit_w": 700.0,
            "pstate": "P0",
        },
    }
    assert second["cuda:1 (NVML 0)"] == {  # read now, not at start
        "temperature_c": 71.0,
        "sm_clock_mhz": 1410.0,
        "power_limit_w": 300.0,
        "pstate": "P2",
    }


def test_telemetry_that_cannot_be_read_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(UUIDS[0], temperature_c=None, sm_clock_mhz=None, pstate=32)  # 32: unknown
    FakeNvml(gpu, FakeGpu(UUIDS[1])).install(monkeypatch)
    meter = fake_meter([0, UUIDS[1]], sample_hz=ASLEEP)
    meter.start()
    try:
        monkeypatch.setattr(pynvml, "nvmlDeviceGetEnforcedPowerLimit", unsupported)

        def broken(*_: Any) -> Any:
            raise RuntimeError("not an NVMLError")

        monkeypatch.setattr(pynvml, "nvmlDeviceGetClockInfo", broken)
        telemetry = meter.telemetry()
        temperatures = meter.temperatures()
    finally:
        meter.stop()
    nothing = dict.fromkeys(("temperature_c", "sm_clock_mhz", "power_limit_w", "pstate"))
    assert telemetry == {
        "cuda:0": nothing,
        f"{UUIDS[1]} (NVML 1)": {**nothing, "temperature_c": 45.0, "pstate": "P0"},
    }
    assert temperatures == {"cuda:0": None, f"{UUIDS[1]} (NVML 1)": 45.0}


def test_temperatures_by_device(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = [FakeGpu(UUIDS[0], temperature_c=38), FakeGpu(UUIDS[1], temperature_c=83)]
    FakeNvml(*gpus).install(monkeypatch)
    meter = fake_meter([0, 1], sample_hz=ASLEEP)
    meter.start()
    try:
        assert meter.temperatures() == {"cuda:0": 38.0, "cuda:1": 83.0}
        gpus[1].temperature_c = 60  # cooling down
        assert meter.temperatures() == {"cuda:0": 38.0, "cuda:1": 60.0}
    finally:
        meter.stop()


def test_no_telemetry_without_an_open_device(monkeypatch: pytest.MonkeyPatch) -> None:
    init_error = nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    FakeNvml(FakeGpu(UUIDS[0])).install(monkeypatch)
    unused, stopped = fake_meter([]), fake_meter([0])
    assert (stopped.telemetry(), stopped.temperatures()) == (None, {})  # before start
    unused.start()
    stopped.start()
    stopped.stop()
    for meter in (unused, stopped):
        assert (meter.telemetry(), meter.temperatures()) == (None, {})
    unused.stop()
    FakeNvml(FakeGpu(UUIDS[0]), init_error=init_error).install(monkeypatch)
    unavailable = fake_meter([0])
    unavailable.start()
    assert (unavailable.telemetry(), unavailable.temperatures()) == (None, {})
    unavailable.stop()
