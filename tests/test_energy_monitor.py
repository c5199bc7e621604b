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


def test_a_run_that_never_left_warm_up_has_an_empty_train_window(rig) -> None:
    monitor, clock, gpu, ram = rig
    monitor.switch("idle")
    advance(clock, 2.0, (gpu, 100.0), (ram, 10.0))
    monitor.switch("warmup")
    monitor.count_samples(32)
    advance(clock, 1.0, (gpu, 300.0), (ram, 5.0))
    monitor.stop()
    result = monitor.result()
    train, fit = result["windows"]["train"], result["windows"]["fit"]
    assert train["total_j"] is None and train["j_per_1k_samples"] is None  # empty, never 0
    assert train["components"]["gpu"]["joules"] is None
    assert "ended in warm-up" in train["reason"]
    assert fit["total_j"] == pytest.approx(305.0) and fit["samples"] == 32
    assert any("never left warm-up" in w for w in result["warnings"])


def test_training_that_draws_idle_power_is_said_to_be_time(rig) -> None:
    monitor, clock, gpu, _ = rig
    for joules in (100.0, 104.0, 96.0):  # idle segments of 1 s: 100 W, spread 4 W
        monitor.switch("idle")
        advance(clock, 1.0, (gpu, joules))
    monitor.switch("train")
    advance(clock, 10.0, (gpu, 1030.0))  # 103 W: inside the idle spread
    monitor.stop()
    (warning,) = [w for w in monitor.result()["warnings"] if "cannot tell" in w]
    assert "103 W against 100 W idle" in warning and "proportional to time" in warning


def test_training_well_above_idle_gives_no_such_warning(rig) -> None:
    monitor, clock, gpu, _ = rig
    for joules in (100.0, 101.0):
        monitor.switch("idle")
        advance(clock, 1.0, (gpu, joules))
    monitor.switch("train")
    advance(clock, 10.0, (gpu, 2000.0))  # 200 W
    monitor.stop()
    assert not any("cannot tell" in w for w in monitor.result()["warnings"])


class PeriodicMeter(ScriptedMeter):
    """A scripted meter that, like CodeCarbon, measures once a second."""

    period_s = 1.0


def test_a_window_is_reliable_only_when_it_lasts_ten_periods_of_its_slowest_meter() -> None:
    clock, cpu = Clock(), PeriodicMeter("cpu", "codecarbon_cpu_load_estimate")
    monitor = EnergyMonitor([cpu], clock=clock)
    monitor.start()
    monitor.switch("warmup")
    advance(clock, 0.2, (cpu, 2.0))  # a 3-step warm-up: a fifth of one period
    monitor.switch("train")
    advance(clock, 30.0, (cpu, 300.0))
    monitor.switch("generate")
    advance(clock, 1.5, (cpu, 15.0))
    monitor.stop()
    windows = monitor.result()["windows"]
    assert windows["warmup"]["reliable"] is False
    assert windows["warmup"]["reliability_reason"] == (
        "0.2 s is shorter than 10 periods of PeriodicMeter (1 s each)")
    assert windows["train"]["reliable"] is True and windows["train"]["reliability_reason"] is None
    assert windows["fit"]["reliable"] is True  # 30.2 s
    assert windows["generate"]["reliable"] is False and windows["generate"]["total_j"] == 15.0
    assert windows["total"]["total_j"] == pytest.approx(317.0)  # generate is part of the run
    assert windows["eval"]["reliable"] is False  # never entered: no figure to trust
    assert "never entered" in windows["eval"]["reliability_reason"]


def test_a_fault_makes_a_window_unreliable_whatever_its_length(rig) -> None:
    monitor, clock, gpu, ram = rig
    monitor.switch("train")
    advance(clock, 60.0, (gpu, 600.0), (ram, 60.0))
    gpu.faults, gpu.fault = 1, "gpu0: energy counter went backwards"
    monitor.switch(None)
    monitor.stop()
    train = monitor.result()["windows"]["train"]
    assert train["reliable"] is False and "counter went backwards" in train["reliability_reason"]


def test_a_given_idle_baseline_stands_in_for_measuring_one(rig) -> None:
    monitor, clock, gpu, ram = rig
    monitor.switch("train")
    advance(clock, 10.0, (gpu, 1000.0), (ram, 100.0))  # 110 W
    monitor.stop()
    baseline = {"window": {"duration_s": 5.0, "total_j": 250.0}, "power_w": 50.0,
                "segment_powers_w": [49.0, 51.0]}
    result = monitor.result(baseline=baseline)
    assert result["windows"]["idle"] is baseline["window"]
    assert result["idle_power_w"] == 50.0
    assert result["windows"]["train"]["net_j"] == pytest.approx(1100.0 - 50.0 * 10.0)
    assert monitor.baseline() is None  # it measured none itself


class GpuWithTelemetry(ScriptedMeter):
    """A scripted GPU meter with a temperature and a second, sampled energy figure."""

    def __init__(self) -> None:
        super().__init__("gpu", NVML_COUNTER)
        self.temperature_c, self.sampled_j = 40.0, 0.0

    def read(self) -> dict[str, Reading]:
        self.reads += 1
        return {"gpu": Reading(self.joules, self.source, cross_check_j=self.sampled_j)}

    def telemetry(self) -> dict:
        return {"0": {"temperature_c": self.temperature_c}}


def test_telemetry_at_window_edges_and_the_counter_cross_checked() -> None:
    clock, gpu = Clock(), GpuWithTelemetry()
    monitor = EnergyMonitor([gpu], clock=clock)
    monitor.start()
    monitor.switch("train")
    clock.now += 20.0
    gpu.joules, gpu.sampled_j, gpu.temperature_c = 2000.0, 2010.0, 65.0  # 0.5 % apart
    monitor.switch("eval")
    clock.now += 20.0
    gpu.joules, gpu.sampled_j, gpu.temperature_c = 3000.0, 3210.0, 70.0  # eval: 20 % apart
    monitor.stop()
    result = monitor.result()
    train, evaluation = result["windows"]["train"], result["windows"]["eval"]
    assert train["telemetry"] == {"start": {"GpuWithTelemetry": {"0": {"temperature_c": 40.0}}},
                                  "end": {"GpuWithTelemetry": {"0": {"temperature_c": 65.0}}}}
    assert evaluation["telemetry"]["end"]["GpuWithTelemetry"]["0"]["temperature_c"] == 70.0
    assert train["cross_check_rel"] == {"gpu": pytest.approx(0.005)}
    assert evaluation["cross_check_rel"] == {"gpu": pytest.approx(0.2)}
    (warning,) = [w for w in result["warnings"] if "sampled power" in w]
    assert warning.startswith("eval: gpu energy by its counter and by sampled power differ by 20")
