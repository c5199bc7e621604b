"""benchmarks/gpu/first_contact.py without a GPU: its refusal, its runner (time limits for each
section and for the whole script, a section that fails or hangs), the fork section against the
fake NVML module, the 50 Hz trace and its analysis against the fake NVML, and the report, which
invents no number. The whole script runs where there is a GPU (marked ``gpu``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.gpu import first_contact, report
from benchmarks.gpu.trace import Tracer, analyse
from tests.nvml_fake import FakeClock, FakeNvml, hopper
from tests.test_gpu_validation import check_no_invented_numbers

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu" / "first_contact.py"
FAKE_PYNVML = Path(__file__).resolve().parent / "fake_pynvml"


def fake_trace(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The trace section's result, polled at 50 Hz from the fake NVML: 100 W, 400 W from 3 s
    to 8 s, then 100 W again; power averaged over a second beside the instantaneous field, a
    counter that updates every 100 ms from t = 0.037."""
    gpu = hopper(power_mw=100_000, power_steps=[(3.0, 400_000), (8.0, 100_000)])
    fake = FakeNvml(gpu).install(monkeypatch)
    import pynvml

    pynvml.nvmlInit()
    tracer = Tracer(pynvml, pynvml.nvmlDeviceGetHandleByIndex(0), fake.clock)
    for step in range(1, 601):
        fake.clock.t = step / 50
        tracer.poll()
    pynvml.nvmlShutdown()
    return {"rows": tracer.rows, "busy_start_s": 3.0, "busy_end_s": 8.0, "target_hz": 50.0,
            "matmul_tflops": 612.3, "matmul_dtype": "bfloat16", "matmul_n": 8192,
            "analysis": analyse(tracer.rows, 3.0, 8.0)}


# The trace.


def test_the_trace_measures_each_readings_lag_and_the_counters_period(monkeypatch):
    a = fake_trace(monkeypatch)["analysis"]
    assert (a["rows"], a["poll_hz"], a["idle_w"], a["busy_w"]) == (600, 50.0, 100.0, 400.0)
    assert a["counter_period_s"] == pytest.approx(0.1, abs=0.021)  # to within one poll
    assert a["lags"]["instant"] == {"rising_s": 0.0, "falling_s": 0.0}  # the reference
    # averaged over a second: half-way half a second after each step
    assert a["lags"]["averaged"]["rising_s"] == pytest.approx(0.5, abs=0.03)
    assert a["lags"]["averaged"]["falling_s"] == pytest.approx(0.5, abs=0.03)
    # the counter shows a step within an update or so (its own period, and where it falls)
    assert 0 < a["lags"]["counter"]["rising_s"] < 0.2
    assert 0 < a["lags"]["counter"]["falling_s"] < 0.2


def test_the_trace_shows_what_averaged_power_costs_a_short_window(monkeypatch):
    a = fake_trace(monkeypatch)["analysis"]
    whole, first = a["whole"], a["first_load"]
    assert abs(whole["instant_gap"]) < 0.01 and abs(whole["averaged_gap"]) < 0.02
    # the load's first second: 400 J drawn; the averaged reading integrates to 250 J
    assert first["instant_j"] == pytest.approx(400.0, abs=1.0)
    assert first["averaged_j"] == pytest.approx(250.0, abs=2.0)
    assert first["averaged_gap"] < -0.25 and abs(first["instant_gap"]) < 0.1


def test_a_reading_the_gpu_lacks_is_none_in_every_row_and_in_the_analysis(monkeypatch):
    fake = FakeNvml(hopper(instant_field=False)).install(monkeypatch)
    import pynvml

    pynvml.nvmlInit()
    tracer = Tracer(pynvml, pynvml.nvmlDeviceGetHandleByIndex(0), fake.clock)
    for step in range(1, 101):
        fake.clock.t = step / 50
        tracer.poll()
    pynvml.nvmlShutdown()
    assert {row["instant_w"] for row in tracer.rows} == {None}
    a = analyse(tracer.rows, 1.0, 1.5)
    assert (a["idle_w"], a["lags"]) == (None, {})  # no instantaneous power: no reference
    assert a["first_load"]["instant_j"] is None and a["first_load"]["averaged_j"] is not None


# The fork section, on the fake NVML module.


def test_the_fork_section_reads_the_counter_in_a_point_forked_after_the_imports(tmp_path):
    result = tmp_path / "fork.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAKE_PYNVML), str(ROOT)])}
    subprocess.run([sys.executable, str(SCRIPT), "--section", "fork", "--device",
                    "GPU-fake-0000", "--result", str(result)], env=env, cwd=tmp_path,
                   check=True, timeout=120)
    found = json.loads(result.read_text())
    assert found["sessions_closed"] == 1  # CodeCarbon's import opened one
    assert found["sessions_open_at_fork"] == 0
    assert found["cuda_initialized_at_fork"] is False
    point = found["point"]
    assert (point["source"], point["faults"], point["unavailable"]) == (
        "nvml_energy_counter", 0, None)
    assert point["joules"] == pytest.approx(200.0, abs=25.0)  # the fake's 100 W for 2 s


# The runner.


class FakeSections:
    """Stands in for the sections' processes: writes what each would have found, taking
    ``takes_s`` of a fake clock; ``outcome`` overrides a section's (status, reason)."""

    def __init__(self, found: dict[str, Any], out: Path, takes_s: float = 10.0,
                 outcome: dict[str, tuple[str, str | None]] | None = None) -> None:
        self.found, self.out, self.takes_s = found, out, takes_s
        self.outcome = outcome or {}
        self.clock = FakeClock(100.0)
        self.commands: list[list[str]] = []
        self.timeouts: dict[str, float] = {}

    def __call__(self, command: list[str], timeout_s: float, log: Path) -> tuple[str, Any]:
        self.commands.append(command)
        name = command[command.index("--section") + 1] if "--section" in command \
            else "validation"
        self.timeouts[name] = timeout_s
        self.clock.t += self.takes_s
        if name in self.outcome:
            return self.outcome[name]
        if name == "validation":
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "gpu-validation-nvidia-h200.json").write_text(json.dumps({"sections": {
                "nvml": {"status": "ok"}, "quickstart": {"status": "skipped",
                                                         "reason": "skipped with --skip"}}}))
        else:
            Path(command[command.index("--result") + 1]).write_text(json.dumps(self.found[name]))
        return "ok", None


DEVICE = {
    "torch_name": "NVIDIA H200", "torch_uuid": "5d3a1f0e-7b2c-4e8a-9c1d-0a2b3c4d5e6f",
    "nvml_device": "5d3a1f0e-7b2c-4e8a-9c1d-0a2b3c4d5e6f", "count": 1,
    "cuda_visible_devices": None, "capability": "9.0",
    "nvml_uuid": "GPU-5d3a1f0e-7b2c-4e8a-9c1d-0a2b3c4d5e6f", "nvml_index": 0, "mig_uuid": None,
    "sharing": [], "driver": "580.159.04", "mig_mode": [0, 0], "compute_processes": [],
    "counter_mj": 5123456789, "instant_mw": 118_345, "averaged_mw": 117_912,
    "meter": {"unavailable": None, "devices": [{
        "source": "nvml_energy_counter", "period_s": 0.0203, "period_basis": "counter_updates",
        "counter_error": None, "power_reading": "instant", "matched_by": "uuid"}]},
}
FORK = {"import_s": 6.31, "sessions_closed": 1, "sessions_open_at_fork": 0,
        "cuda_initialized_at_fork": False,
        "point": {"source": "nvml_energy_counter", "joules": 236.71, "seconds": 2.0,
                  "mean_w": 118.4,
                  "faults": 0, "fault": None, "unavailable": None, "period_s": 0.0203,
                  "power_reading": "instant"}}


def arguments(out: Path, limit: float = 300.0) -> Any:
    return first_contact.parse_args(["--out", str(out), "--limit", str(limit)])


def test_every_section_runs_in_order_within_the_limit_and_the_report_says_what_it_found(
    tmp_path, monkeypatch,
):
    found = {"device": DEVICE, "fork": FORK, "trace": fake_trace(monkeypatch)}
    sections = FakeSections(found, tmp_path / "out")
    args = arguments(tmp_path / "out")
    result = first_contact.run(args, ["--limit", "300"], runner=sections, clock=sections.clock)
    assert list(result["sections"]) == ["device", "fork", "trace", "validation"]
    assert {s["status"] for s in result["sections"].values()} == {"ok"}
    assert sections.timeouts == {"device": 60.0, "fork": 90.0, "trace": 60.0,
                                 "validation": 300.0 - 30.0 - 10.0}
    fork_command = sections.commands[1]
    assert fork_command[fork_command.index("--device") + 1] == DEVICE["nvml_device"]
    validation = sections.commands[-1]
    assert validation[validation.index("--budget") + 1] == "240"  # 260 s left, 20 s of grace
    assert "quickstart" in validation and "--quick" in validation
    assert result["sections"]["validation"]["report"] == "gpu-validation-nvidia-h200.md"

    path = first_contact.write(result, tmp_path / "out")
    assert path.name == "gpu-first-contact-nvidia-h200.md"
    text = path.read_text()
    assert json.loads(path.with_suffix(".json").read_text())["sections"]["fork"] == {
        "status": "ok", "reason": None, "elapsed_s": 10.0, **FORK}
    csv_lines = path.with_suffix(".trace.csv").read_text().splitlines()
    assert csv_lines[0] == "t,read_s,averaged_w,instant_w,counter_j" and len(csv_lines) == 601
    for title in report.TITLES.values():
        assert f"\n## {title}\n" in text and f"| {title} | ok |" in text
    assert "| averaged | 0.510 | 0.510 |" in text  # half a second, to within a poll
    assert "| NvmlMeter: source, period, basis | nvml_energy_counter, 0.0203 s, " \
           "counter_updates |" in text
    assert "at the fork 0 were open, and CUDA was not initialised." in text
    assert "| nvml | ok |" in text and "| quickstart | skipped: skipped with --skip |" in text
    assert check_no_invented_numbers(text, result) > 40


def test_a_section_that_fails_or_runs_out_of_time_is_reported_and_the_rest_go_on(
    tmp_path, monkeypatch,
):
    sections = FakeSections({"device": DEVICE, "trace": fake_trace(monkeypatch)},
                            tmp_path / "out", outcome={
                                "fork": ("timed out", "stopped after 90 s"),
                                "trace": ("failed", "exit 1: RuntimeError: CUDA error")})
    result = first_contact.run(arguments(tmp_path / "out"), [], runner=sections,
                               clock=sections.clock)
    assert [s["status"] for s in result["sections"].values()] == [
        "ok", "timed out", "failed", "ok"]
    text = report.render(result)
    assert "| NVML in a point forked from the warm server | timed out: stopped after 90 s |" \
        in text
    assert ("\n## Power and energy counter, logged across idle, matrix products and idle\n\n"
            "failed: exit 1: RuntimeError: CUDA error.\n") in text
    assert check_no_invented_numbers(text, result) > 10


def test_without_enough_time_left_the_validation_is_not_started(tmp_path):
    sections = FakeSections({"device": DEVICE, "fork": FORK, "trace": {}}, tmp_path / "out",
                            takes_s=20.0)
    result = first_contact.run(arguments(tmp_path / "out", limit=120.0), [], runner=sections,
                               clock=sections.clock)
    assert result["sections"]["validation"] == {"status": "skipped", "reason": (
        "50 s left; the quick validation needs at least 80 s")}
    assert len(sections.commands) == 3
    text = report.render(result)
    assert "skipped: 50 s left; the quick validation needs at least 80 s" in text


def test_a_section_process_past_its_limit_is_killed_with_everything_it_started(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    began = time.monotonic()
    outcome = first_contact.in_process([sys.executable, "-c", code], 2.0, tmp_path / "x.log")
    assert outcome == ("timed out", "stopped after 2 s")
    assert time.monotonic() - began < 10
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # the kernel reaps it once its parent is gone
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the section's own child outlived it")


def test_a_section_process_that_fails_gives_its_last_line(tmp_path):
    outcome = first_contact.in_process(
        [sys.executable, "-c", "import sys; print('working'); sys.exit('no GPU here')"], 30.0,
        tmp_path / "x.log")
    assert outcome == ("failed", "exit 1: no GPU here")


def test_without_a_cuda_gpu_it_refuses_in_one_line_from_any_folder(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        done.stderr.strip()] and done.stderr.startswith("first_contact: no CUDA GPU")
    assert not (tmp_path / "out").exists()


def test_main_writes_the_report_and_exits_1_when_a_section_did_not_complete(
    tmp_path, monkeypatch,
):
    sections = FakeSections({"device": DEVICE, "fork": FORK, "trace": fake_trace(monkeypatch)},
                            tmp_path / "out", outcome={"fork": ("failed", "exit 1: boom")})
    monkeypatch.setattr(first_contact, "gpu_missing", lambda: None)
    real_run = first_contact.run
    monkeypatch.setattr(first_contact, "run", lambda args, argv: real_run(
        args, argv, runner=sections, clock=sections.clock))
    assert first_contact.main(["--out", str(tmp_path / "out")]) == 1
    assert (tmp_path / "out" / "gpu-first-contact-nvidia-h200.md").exists()


@pytest.mark.gpu
def test_first_contact_on_a_gpu(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--limit",
                           "240"], capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    (found,) = tmp_path.glob("gpu-first-contact-*.md")
    result = json.loads(found.with_suffix(".json").read_text())
    assert result["sections"]["device"]["status"] == "ok"
    assert result["sections"]["fork"]["point"]["faults"] == 0
