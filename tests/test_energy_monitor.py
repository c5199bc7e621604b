"""The window core, exactly: scripted meters and a scripted clock, every joule accounted once."""

from __future__ import annotations

import pytest

from greenbench.energy.meters import CODECARBON_RAM, NVML_COUNTER, Meter, Reading
from greenbench.energy.monitor import EnergyMonitor


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedMeter(Meter):
    """Cumulative joules that the test sets by hand; counts how often it is read."""

    def __init__(self, component: str, source: str) -> None:
        self.components = (component,)
        self.component, self.source = component, source
        self.joules, self.faults, self.fault = 0.0, 0, None
        self.reads = 0
        self.stopped = False

    def start(self) -> None:
        pass

    def read(self) -> dict[str, Reading]:
        self.reads += 1
        return {self.component: Reading(self.joules, self.source, self.faults, self.fault)}

    def stop(self) -> None:
        self.stopped = True


def advance(clock: Clock, seconds: float, *steps: tuple[ScriptedMeter, float]) -> None:
    clock.now += seconds
    for meter, joules in steps:
        meter.joules += joules


@pytest.fixture
def rig():
    clock, gpu, ram = Clock(), ScriptedMeter("gpu", NVML_COUNTER), ScriptedMeter(
        "ram", CODECARBON_RAM)
    monitor = EnergyMonitor([gpu, ram], clock=clock)
    monitor.start()
    return monitor, clock, gpu, ram


def test_phases_eval_pauses_train_and_total_adds_up(rig) -> None:
    monitor, clock, gpu, ram = rig
    advance(clock, 5.0, (gpu, 999.0))  # before any phase: belongs to no window
    monitor.switch("idle")
    advance(clock, 2.0, (gpu, 100.0), (ram, 10.0))  # idle: 55 W
    monitor.switch("warmup")
    advance(clock, 1.0, (gpu, 200.0), (ram, 5.0))
    monitor.count_samples(64)
    monitor.switch("train")
    advance(clock, 3.0, (gpu, 600.0), (ram, 15.0))
    monitor.count_samples(192)
    with monitor.window("eval"):  # in the middle of training
        advance(clock, 1.0, (gpu, 50.0), (ram, 5.0))
        monitor.count_samples(999)  # not training: not counted
    assert monitor.phase == "train"
    advance(clock, 1.0, (gpu, 300.0), (ram, 5.0))
    monitor.count_samples(64)
    monitor.stop()
    advance(clock, 9.0, (gpu, 999.0))  # after stop: belongs to no window

    result = monitor.result()
    w = result["windows"]
    assert result["idle_power_w"] == 55.0
    assert w["idle"]["duration_s"] == 2.0 and w["idle"]["total_j"] == 110.0
    assert w["idle"]["net_j"] is None
    assert w["warmup"]["components"]["gpu"]["joules"] == 200.0
    assert w["warmup"]["total_j"] == 205.0 and w["warmup"]["net_j"] == 150.0
    assert w["train"]["duration_s"] == 4.0 and w["train"]["total_j"] == 920.0
    assert w["train"]["samples"] == 256
    assert w["train"]["j_per_1k_samples"] == pytest.approx(1000 * 920 / 256)
    assert w["train"]["net_j"] == 920.0 - 55.0 * 4.0
    assert w["eval"]["total_j"] == 55.0 and w["eval"]["samples"] == 0
    assert w["eval"]["j_per_1k_samples"] is None
    assert w["eval"]["net_j"] == 0.0  # exactly idle power: nothing net
    assert w["total"]["duration_s"] == 6.0
    assert w["total"]["total_j"] == 205.0 + 920.0 + 55.0
    assert w["total"]["samples"] == 320
    assert w["total"]["components"]["gpu"] == {
        "joules": 1150.0, "source": NVML_COUNTER, "measured": True, "reason": None}
    assert w["total"]["measured"] is False  # RAM is an estimate
    assert w["total"]["components"]["cpu"]["source"] == "unavailable"  # no meter for it
    assert result["warnings"] == []
    assert gpu.stopped and ram.stopped


def test_meters_are_read_at_window_edges_only(rig) -> None:
    monitor, _, gpu, _ = rig
    monitor.switch("train")
    for _ in range(1000):
        monitor.count_samples(32)
    monitor.stop()
    assert gpu.reads == 3  # start, switch, stop


def test_a_fault_invalidates_exactly_the_windows_it_falls_in(rig) -> None:
    monitor, clock, gpu, ram = rig
    monitor.switch("warmup")
    advance(clock, 1.0, (gpu, 100.0), (ram, 1.0))
    monitor.switch("train")
    advance(clock, 1.0, (gpu, 100.0), (ram, 1.0))
    gpu.faults, gpu.fault = 1, "GPU 0: energy counter went backwards"
    monitor.switch("eval")
    advance(clock, 1.0, (gpu, 100.0), (ram, 1.0))
    monitor.stop()

    w = monitor.result()["windows"]
    assert w["warmup"]["valid"] is True and w["eval"]["valid"] is True
    assert w["train"]["valid"] is False and w["train"]["total_j"] is None
    assert w["train"]["reason"] == "gpu: GPU 0: energy counter went backwards"
    assert w["train"]["components"]["gpu"]["reason"] == "GPU 0: energy counter went backwards"
    assert w["total"]["valid"] is False and w["total"]["total_j"] is None


def test_unavailable_components_are_never_zero(rig) -> None:
    clock = Clock()
    monitor = EnergyMonitor([], clock=clock)
    monitor.start()
    monitor.switch("train")
    advance(clock, 1.0)
    monitor.stop()
    train = monitor.result()["windows"]["train"]
    assert all(c["joules"] is None for c in train["components"].values())
    assert train["total_j"] is None and train["measured"] is False


def test_net_below_zero_is_clamped_with_a_warning(rig) -> None:
    monitor, clock, gpu, _ = rig
    monitor.switch("idle")
    advance(clock, 1.0, (gpu, 100.0))
    monitor.switch("train")
    advance(clock, 1.0, (gpu, 60.0))
    monitor.stop()
    result = monitor.result()
    assert result["windows"]["train"]["net_j"] == 0.0
    assert any(w.startswith("train: net energy -40 J is below zero") for w in result["warnings"])


def test_without_idle_baseline_net_is_not_computed(rig) -> None:
    monitor, clock, gpu, _ = rig
    monitor.switch("train")
    advance(clock, 1.0, (gpu, 60.0))
    monitor.stop()
    result = monitor.result()
    assert result["windows"]["train"]["net_j"] is None
    assert result["idle_power_w"] is None
    assert "no valid idle baseline" in result["warnings"][0]


def test_unknown_phase_and_switch_before_start() -> None:
    monitor = EnergyMonitor([])
    with pytest.raises(RuntimeError):
        monitor.switch("train")
    monitor.start()
    with pytest.raises(ValueError, match="unknown phase"):
        monitor.switch("lunch")
