"""What a real GPU does that a kind fake would not, and that the GPU meter must survive: NVML
inherited through fork, power averaged over a second with the instantaneous field beside it,
CUDA's and NVML's device orders, MIG, and an energy counter with its own period and offset.

Against the hardened fake of ``tests/nvml_fake.py`` (in this process, and as a ``pynvml``
module in processes a test starts); the last tests run on a real GPU where there is one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from greenbench.energy.callback import EnergyCallback, nvml_device
from greenbench.energy.meters import GPU, NVML_COUNTER, NVML_SAMPLING, SHARED_DEVICE
from greenbench.energy.monitor import TRAIN, EnergyMonitor
from greenbench.energy.nvml import NvmlMeter
from greenbench.energy.nvml_telemetry import smallest_change_interval
from greenbench.point import server
from tests.nvml_fake import UUIDS, FakeClock, FakeGpu, FakeNvml, RealClock, hopper
from tests.test_energy_callback import Regressor, loader, trainer

ROOT = Path(__file__).resolve().parent.parent
FAKE_PYNVML = Path(__file__).resolve().parent / "fake_pynvml"
MIG_UUID = "MIG-1f2e3d4c-0000-4000-8000-000000000001"


def meter_on(fake: FakeNvml, devices: list[Any], **kwargs: Any) -> NvmlMeter:
    """A meter on the fake's clock, sampling at 10 Hz unless told (its thread may run: the fake
    clock moves only when the test moves it, so a sample of the thread repeats one of ours)."""
    return NvmlMeter(devices, clock=fake.clock, sleep=fake.clock.sleep,
                     **{"sample_hz": 10.0, **kwargs})


def run_until(meter: NvmlMeter, clock: FakeClock, t: float, hz: float = 10.0) -> None:
    """Move the fake clock to ``t`` in steps of 1/hz, sampling at each."""
    while clock.t < t - 1e-9:
        clock.t = min(t, round(clock.t * hz + 1) / hz)
        meter.sample()


def fork_and_call(body: Any) -> dict[str, Any]:
    """``body()`` in a child forked from this process; what it returned (a JSON dict)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        os.close(read_end)
        try:
            result = body()
        except BaseException as error:
            result = {"error": repr(error)}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


# 1. NVML across the fork server's fork.


def test_the_fork_server_holds_no_nvml_session_when_it_forks(tmp_path: Path) -> None:
    """The real fork server, its ``pynvml`` the fake module: CodeCarbon's import opens a
    session; by the time the server forks a point, none is open."""
    log, handoff = tmp_path / "nvml.log", tmp_path / "handoff"
    handoff.mkdir()
    env = {**os.environ, "FAKE_NVML_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(FAKE_PYNVML), str(ROOT),
                                          os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "greenbench.point.server", str(os.getpid())],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert "ready" in json.loads(process.stdout.readline())
        request = {"handoff": str(handoff), "environment": {"TMPDIR": str(tmp_path)}}
        process.stdin.write(json.dumps(request).encode() + b"\n")
        process.stdin.flush()
        started = json.loads(process.stdout.readline())
        assert "started" in started
        while "exited" not in json.loads(process.stdout.readline()):  # no spec: it fails
            pass
    finally:
        process.stdin.close()
        process.wait(timeout=60)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    in_server = [e for e in events if e["pid"] == process.pid]
    assert in_server[0] == {"event": "init", "pid": process.pid, "refcount": 1}  # CodeCarbon's
    forks = [e for e in in_server if e["event"] == "fork"]
    assert forks == [{"event": "fork", "pid": process.pid, "refcount": 0}]


def test_a_point_forked_after_the_imports_opens_its_own_nvml_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeNvml(hopper(power_mw=300_000)).install(monkeypatch)
    import pynvml

    pynvml.nvmlInit()  # what CodeCarbon's import does in the fork server
    assert server.release_nvml() == 1
    assert pynvml._nvmlLib_refcount == 0

    def point() -> dict[str, Any]:
        meter = meter_on(fake, [0], sample_hz=1e-6)
        meter.start()
        fake.clock.t += 2.0
        reading = meter.read()[GPU]
        meter.stop()
        opened = [e for e in fake.events if e["event"] == "init" and e["pid"] == os.getpid()]
        return {"joules": reading.joules, "source": reading.source, "fault": reading.fault,
                "own_session": [e["refcount"] for e in opened] == [1]}

    child = fork_and_call(point)
    assert child == {"joules": 600.0, "source": NVML_COUNTER, "fault": None, "own_session": True}


def test_the_fake_refuses_a_session_inherited_through_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the server must let go: a point that inherits the session cannot measure."""
    fake = FakeNvml(hopper()).install(monkeypatch)
    import pynvml

    pynvml.nvmlInit()  # left open, as the fork server did before

    def point() -> dict[str, Any]:
        meter = meter_on(fake, [0])
        meter.start()
        reading = meter.read()[GPU]
        meter.stop()
        return {"joules": reading.joules, "fault": reading.fault}

    assert fork_and_call(point) == {
        "joules": None, "fault": "cuda:0: NVML cannot open it (Unknown Error)"}
    pynvml.nvmlShutdown()


# 2. Instantaneous power, and a cross-check that judges only what it can.


def test_sampled_power_is_the_instantaneous_field_where_the_gpu_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A window that opens on a power step: one-second averaged power would fall short by half
    a second of the step (about 200 J of 1,000 here); the instantaneous field does not."""
    gpu = hopper(power_mw=100_000, power_steps=[(5.0, 500_000)])
    fake = FakeNvml(gpu).install(monkeypatch)
    meter = meter_on(fake, [0])
    monitor = EnergyMonitor([meter], clock=fake.clock)
    monitor.start()
    try:
        run_until(meter, fake.clock, 5.0)
        monitor.switch(TRAIN)
        run_until(meter, fake.clock, 7.0)
        monitor.switch(None)
    finally:
        monitor.stop()
    result = monitor.result()
    train = result["windows"]["train"]
    assert train["components"]["gpu"]["joules"] == pytest.approx(974.8, abs=0.1)  # the counter
    assert train["cross_check_rel"]["gpu"] < 0.03  # 1,000 J sampled: the counter's granularity
    assert not [w for w in result["warnings"] if "sampled power differ" in w]
    assert meter.details()["power_reading"] == "instant"
    assert meter.details()["devices"][0]["power_reading"] == "instant"


def test_without_the_instantaneous_field_power_is_averaged_and_said_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = FakeGpu(UUIDS[0], energy_mj=None, instant_field=False, power_mw=100_000,
                  power_steps=[(2.0, 300_000)])
    fake = FakeNvml(gpu).install(monkeypatch)
    meter = meter_on(fake, [0])
    meter.start()
    run_until(meter, fake.clock, 2.0)
    opened = meter.read()[GPU].joules
    run_until(meter, fake.clock, 3.0)
    closed = meter.read()[GPU].joules
    details = meter.details()
    meter.stop()
    device = details["devices"][0]
    assert (details["power_reading"], device["power_reading"]) == ("averaged_1s", "averaged_1s")
    # the averaged reading climbs over a second: 200 J, not the 300 J drawn in the second after
    assert closed - opened == pytest.approx(200.0, abs=1.0)
    assert (meter.period_s, device["period_basis"]) == (1.0, "power_averaging")


@pytest.mark.parametrize(("instant_field", "seconds", "judged"), [
    (False, 2.0, False), (False, 12.0, True), (True, 2.0, True)])
def test_the_cross_check_judges_only_windows_of_ten_periods_of_its_power(
    monkeypatch: pytest.MonkeyPatch, instant_field: bool, seconds: float, judged: bool,
) -> None:
    gpu = hopper(instant_field=instant_field, power_mw=100_000, power_steps=[(5.0, 500_000)])
    fake = FakeNvml(gpu).install(monkeypatch)
    meter = meter_on(fake, [0])
    monitor = EnergyMonitor([meter], clock=fake.clock)
    monitor.start()
    try:
        run_until(meter, fake.clock, 5.0)
        monitor.switch(TRAIN)
        run_until(meter, fake.clock, 5.0 + seconds)
        monitor.switch(None)
    finally:
        monitor.stop()
    result = monitor.result()
    train = result["windows"]["train"]
    warned = [w for w in result["warnings"] if "sampled power differ" in w]
    if judged:
        assert train["cross_check_rel"]["gpu"] < 0.05 and not warned
        assert "cross_check_not_judged" not in train
    else:
        assert "cross_check_rel" not in train and not warned
        assert train["cross_check_not_judged"] == {"gpu": (
            "2 s is shorter than 10 periods of the power it is checked against (1 s each)")}


# 3. Devices by UUID.


def cuda_properties(monkeypatch: pytest.MonkeyPatch, uuids: dict[int, str] | None) -> None:
    """torch's view of the CUDA devices (none here): the UUID of each index, as torch prints
    it (without NVML's prefix); None: torch gives no UUID."""

    def properties(index: int) -> Any:
        if uuids is None:
            raise AttributeError("no uuid")
        return SimpleNamespace(uuid=uuids[index].removeprefix("GPU-"))

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)


def callback_meter(device: torch.device) -> NvmlMeter:
    """The GPU meter EnergyCallback builds for a Trainer on ``device`` (a non-zero local rank:
    CodeCarbon is another rank's)."""
    trainer_ = SimpleNamespace(local_rank=1, strategy=SimpleNamespace(root_device=device))
    meter = EnergyCallback(idle_seconds=0)._default_meters(trainer_)[0]
    assert isinstance(meter, NvmlMeter)
    return meter


def test_the_callback_names_the_gpu_by_its_uuid_whatever_the_device_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CUDA orders devices fastest first: cuda:0 is NVML's second GPU here."""
    FakeNvml(hopper(UUIDS[0]), hopper(UUIDS[1]), clock=RealClock()).install(monkeypatch)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    cuda_properties(monkeypatch, {0: UUIDS[1], 1: UUIDS[0]})
    meter = callback_meter(torch.device("cuda", 0))
    meter.start()
    device = meter.details()["devices"][0]
    meter.stop()
    assert (device["uuid"], device["index"]) == (UUIDS[1], 1)
    assert (device["matched_by"], device["cuda_device_order"]) == ("uuid", None)


def test_without_a_uuid_the_index_is_used_and_its_order_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FakeNvml(hopper(UUIDS[0]), hopper(UUIDS[1])).install(monkeypatch)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    cuda_properties(monkeypatch, None)
    assert nvml_device(torch.device("cuda", 1)) == 1
    meter = meter_on(FakeNvml.installed, [1])
    meter.start()
    device = meter.details()["devices"][0]
    meter.stop()
    assert (device["uuid"], device["matched_by"]) == (UUIDS[1], "index")
    assert device["cuda_device_order"] == "PCI_BUS_ID"


# 4. MIG.


def test_a_mig_instance_is_measured_through_its_gpu_and_marked_shared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = hopper(UUIDS[0], power_mw=200_000, mig_instances=[MIG_UUID])
    fake = FakeNvml(gpu).install(monkeypatch)
    bare = MIG_UUID.removeprefix("MIG-")  # as torch gives a MIG instance's UUID
    meter = meter_on(fake, [bare], sample_hz=1e-6)
    monitor = EnergyMonitor([meter], clock=fake.clock)
    monitor.start()
    monitor.switch(TRAIN)
    fake.clock.t += 2.0
    monitor.stop()
    details, result = meter.details(), monitor.result()
    device = details["devices"][0]
    assert (device["uuid"], device["mig_uuid"], device["index"]) == (UUIDS[0], MIG_UUID, 0)
    assert (device["scope"], details["scope"], device["source"]) == (
        SHARED_DEVICE, SHARED_DEVICE, NVML_COUNTER)
    assert device["sharing"] == [f"a MIG instance ({MIG_UUID}): NVML's energy and power are its "
                                 "whole GPU's, every instance's work together"]
    train = result["windows"]["train"]["components"]["gpu"]
    assert (train["joules"], train["scope"]) == (400.0, SHARED_DEVICE)  # the whole GPU's
    assert any(w.startswith("gpu: its energy is not this run's alone (scope shared_device): ")
               and MIG_UUID in w for w in result["warnings"])


def test_a_gpu_with_mig_mode_on_is_marked_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(hopper(UUIDS[0], mig_instances=[MIG_UUID]), hopper(UUIDS[1])).install(
        monkeypatch)
    meter = meter_on(fake, [0, 1], sample_hz=1e-6)
    meter.start()
    reading, details = meter.read()[GPU], meter.details()
    meter.stop()
    assert [d["scope"] for d in details["devices"]] == [SHARED_DEVICE, None]
    assert details["devices"][0]["sharing"] == [
        "MIG mode is on: the GPU is split into instances, and NVML's energy and power are all "
        "of them together"]
    assert (reading.scope, reading.scope_reason.startswith("cuda:0: MIG mode is on")) == (
        SHARED_DEVICE, True)


def test_a_gpu_of_its_own_has_no_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(hopper()).install(monkeypatch)
    meter = meter_on(fake, [0], sample_hz=1e-6)
    monitor = EnergyMonitor([meter], clock=fake.clock)
    monitor.start()
    monitor.switch(TRAIN)
    fake.clock.t += 1.0
    monitor.stop()
    result = monitor.result()
    assert meter.read()[GPU].scope is None
    assert "scope" not in result["windows"]["train"]["components"]["gpu"]
    assert not [w for w in result["warnings"] if "alone" in w]


# 5. The counter's period, and idle segments it cannot blur.


def test_the_period_is_the_smallest_interval_between_changes_despite_a_slow_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The counter updates every 0.1 s from t = 0.037; the probe's read at t = 0.1 takes 50 ms
    and straddles an update: timing that change from either end of the read is off by up to
    50 ms, so only the intervals between changes that well-timed reads found count."""
    fake = FakeNvml(hopper()).install(monkeypatch)
    fake.slow["nvmlDeviceGetTotalEnergyConsumption"] = [0.0] * 50 + [0.05]  # reads 1..51
    meter = meter_on(fake, [0], sample_hz=1e-6)
    meter.start()
    device = meter.details()["devices"][0]
    meter.stop()
    assert device["period_basis"] == "counter_updates"
    assert device["period_s"] == pytest.approx(0.1, abs=0.005)


def test_a_counter_that_changed_once_has_the_probe_limit_as_a_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeNvml(hopper(counter_update_s=0.8, counter_offset_s=0.3)).install(monkeypatch)
    meter = meter_on(fake, [0], sample_hz=1e-6)
    meter.start()
    device = meter.details()["devices"][0]
    meter.stop()
    assert (device["source"], device["period_s"], device["period_basis"]) == (
        NVML_COUNTER, 0.5, "probe_floor")


def test_a_counter_that_never_moves_falls_back_to_sampled_power(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeNvml(hopper(power_mw=250_000, counter_update_s=None)).install(monkeypatch)
    meter = meter_on(fake, [0], sample_hz=1e-6)
    meter.start()
    fake.clock.t += 2.0
    reading, device = meter.read()[GPU], meter.details()["devices"][0]
    meter.stop()
    assert (reading.source, reading.joules) == (NVML_SAMPLING, 500.0)  # never a measured 0 J
    assert device["counter_error"].startswith(
        "the energy counter did not change in 0.5 s of polling (")


def test_idle_segments_are_long_enough_for_the_counter_to_resolve(
    monkeypatch: pytest.MonkeyPatch, workdir: Path,
) -> None:
    """A counter that updates every 50 ms carries up to one update's energy at each edge of a
    segment; under 1 % needs segments of 100 updates (5 s): a 2 s baseline is one segment."""
    fake = FakeNvml(hopper(counter_update_s=0.05), clock=RealClock()).install(monkeypatch)
    meter = NvmlMeter([0], sample_hz=10.0, clock=fake.clock)
    energy = EnergyCallback(idle_seconds=2.0, warmup_steps=1, meters=[meter])
    trainer([energy]).fit(Regressor(), loader(batches=3))
    baseline = energy.result()["baseline"]
    assert meter.details()["devices"][0]["period_s"] == pytest.approx(0.05, abs=0.01)
    assert len(baseline["segment_powers_w"]) == 1
    assert baseline["segment_powers_w"][0] == pytest.approx(100.0, rel=0.05)


def test_smallest_change_interval() -> None:
    times = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert smallest_change_interval(times, [0, 0, 5, 5, 5, 9, 12]) == pytest.approx(0.1)
    assert smallest_change_interval(times, [0, 0, 5, 5, 5, 5, 5]) is None  # one change
    assert smallest_change_interval(times, [1] * 7) is None
    # a read that took 0.25 s found the second change: the intervals beside it are left out
    slow = [0.0, 0.1, 0.2, 0.45, 0.55, 0.65, 0.75]
    assert smallest_change_interval(slow, [0, 5, 5, 9, 12, 12, 15]) == pytest.approx(0.2)


# 6. The fake has the hardware's habits (so the tests above can fail).


def test_the_fake_averages_power_over_a_second_with_the_instant_field_beside_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pynvml

    fake = FakeNvml(hopper(power_mw=100_000, power_steps=[(1.0, 300_000)])).install(monkeypatch)
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    fake.clock.t = 1.5
    instant = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
    assert (instant.nvmlReturn, instant.value.uiVal) == (pynvml.NVML_SUCCESS, 300_000)
    assert pynvml.nvmlDeviceGetPowerUsage(handle) == 200_000  # half a second of each
    fake.clock.t = 1.136  # the counter's last update: t = 1.037 (0.037 + k x 0.1)
    assert pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - 5_000_000_000 == 100_000 + 11_100
    pynvml.nvmlShutdown()


def test_the_fake_calls_take_time_and_mig_handles_have_no_energy_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pynvml

    fake = FakeNvml(hopper(mig_instances=[MIG_UUID]), call_s=0.001).install(monkeypatch)
    pynvml.nvmlInit()
    mig = pynvml.nvmlDeviceGetHandleByUUID(MIG_UUID)
    assert pynvml.nvmlDeviceIsMigDeviceHandle(mig) == 1
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetTotalEnergyConsumption(mig)
    assert pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig))[
        0] == 1
    assert fake.clock.t == pytest.approx(0.006)  # six calls, a millisecond each
    pynvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlDeviceGetCount()


# On a real GPU.


@pytest.mark.gpu
def test_real_gpu_the_callbacks_device_is_torchs_and_its_power_reading_is_known() -> None:
    device = torch.device("cuda", 0)
    meter = NvmlMeter([nvml_device(device)])
    meter.start()
    details = meter.details()
    meter.stop()
    assert details["unavailable"] is None, details["unavailable"]
    (found,) = details["devices"]
    assert found["matched_by"] == "uuid"
    torch_uuid = str(torch.cuda.get_device_properties(0).uuid)
    assert torch_uuid in f"{found['uuid']} {found['mig_uuid']}"
    assert found["power_reading"] in ("instant", "averaged_1s")
    if found["source"] == NVML_COUNTER:
        assert found["period_basis"] in ("counter_updates", "probe_floor")


@pytest.mark.gpu
def test_real_gpu_a_point_forked_after_the_server_imports_reads_the_counter() -> None:
    code = (
        "import json, os, sys, time\n"
        "from greenbench.point import server\n"
        "closed = server.warm_up()\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    from greenbench.energy.nvml import NvmlMeter\n"
        "    m = NvmlMeter([0]); m.start(); time.sleep(1.0); g = m.read()['gpu']; m.stop()\n"
        "    os.write(w, json.dumps([g.source, g.joules, g.faults]).encode()); os._exit(0)\n"
        "os.close(w); data = os.read(r, 4096); os.waitpid(pid, 0)\n"
        "print(json.dumps({'closed': closed, 'child': json.loads(data)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    source, joules, faults = result["child"]
    assert faults == 0 and joules is not None and joules > 0, result
    assert source in (NVML_COUNTER, NVML_SAMPLING)


@pytest.mark.gpu
def test_real_gpu_lists_this_process_and_is_not_shared_because_of_it() -> None:
    me = os.getpid()
    device = torch.device("cuda", 0)
    held = torch.ones(1 << 20, device=device)  # a CUDA context: NVML lists this process now
    torch.cuda.synchronize(device)
    meter = NvmlMeter([nvml_device(device)], own_pids={me})
    meter.start()
    details = meter.details()
    meter.stop()
    del held
    (found,) = details["devices"]
    if found["processes"] is None:  # on a MIG GPU only a privileged caller lists its processes
        assert found["scope"] == SHARED_DEVICE, found["processes_error"]
        pytest.skip(f"the GPU is shared (MIG) and {found['processes_error']}")
    listed = found["processes"]
    named = [int(pid) for why in found["sharing"] if "compute processes" in why
             for pid in re.search(r"\(pids ([\d, ]+)", why).group(1).split(",") if pid.strip()]
    assert me not in named, found["sharing"]
    if me in listed:  # the run's pid namespace: exactly the other pids are foreign
        assert sorted(named) == sorted(set(listed) - {me}), found
    else:  # NVML gives the pids of another (the host's) namespace: ours is one of them
        assert listed, found
        assert bool(named) == (len(listed) > 1), found
