"""benchmarks/gpu/validate.py and its sections: everything that needs no GPU (the arguments,
the section registry, time limits, the report rendered from a result dict, the file name, the
refusal without a GPU, the NVML window against the fake NVML, the sweep it runs and the rows it
makes of real records), and one run of the whole script in --quick mode where a GPU exists."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.gpu import common, flops, multi_gpu, nvml_counter, precisions, quickstart
from benchmarks.gpu import validate as gv
from greenbench.point.run import run_point
from greenbench.sweep.schema import expand, load_sweep
from tests.helpers import tiny_spec
from tests.nvml_fake import FakeGpu, FakeNvml, RealClock, hopper

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu" / "validate.py"


def context(settings: common.Settings, elapsed_s: float = 0.0,
            budget_s: float = gv.BUDGET_S) -> common.Context:
    return common.Context(settings, started=time.perf_counter() - elapsed_s, budget_s=budget_s)


def replaced(run_of: Any) -> tuple[gv.Section, ...]:
    """The registry with each section's work replaced by ``run_of(name)``."""
    return tuple(gv.Section(s.name, s.title, run_of(s.name), s.render, s.estimate_s, s.needs)
                 for s in gv.SECTIONS)


# --------------------------------------------------------------------------- arguments


def test_arguments_default_to_a_full_run_into_reports():
    args = gv.parse_args([])
    assert args.out == ROOT / "reports"
    assert args.quick is False
    assert args.skip == []
    assert args.budget == 480


def test_arguments_quick_out_and_skips(tmp_path):
    args = gv.parse_args(["--out", str(tmp_path), "--quick", "--skip", "nvml, overhead",
                          "--skip", "quickstart", "--skip", "nvml"])
    assert args.out == tmp_path
    assert args.quick is True
    assert args.skip == ["nvml", "overhead", "quickstart"]  # in order, each once


def test_an_unknown_section_to_skip_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        gv.parse_args(["--skip", "nvml,gpu"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "no section 'gpu'" in error
    assert "nvml, overhead, precisions, flops, quickstart, multigpu" in error


# --------------------------------------------------------------------------- the registry


def test_the_registry_names_every_section_once_in_order():
    assert gv.SECTION_NAMES == ("nvml", "overhead", "precisions", "flops", "quickstart",
                                "multigpu")
    by_name = {s.name: s for s in gv.SECTIONS}
    assert by_name["flops"].needs == ("precisions",)
    assert all(set(s.needs) < set(gv.SECTION_NAMES[:gv.SECTION_NAMES.index(s.name)])
               or not s.needs for s in gv.SECTIONS)  # needs only sections that run before


@pytest.mark.parametrize("mode", ["full", "quick"])
def test_the_planned_sections_fit_in_the_budget(mode):
    assert gv.BUDGET_S == 480
    assert sum(s.estimate_s[mode] for s in gv.SECTIONS) <= gv.BUDGET_S - 30  # start-up, header
    quick, full = common.QUICK, common.FULL
    assert quick.long_s < full.long_s and quick.steps < full.steps
    assert quick.overhead_rounds < full.overhead_rounds


def test_a_section_not_run_and_its_dependants_say_why(monkeypatch):
    calls = []

    def fake(name):
        def run(ctx):
            calls.append(name)
            if name == "precisions":
                raise RuntimeError("first line\nthe last line says it")
            return {"rows": []}
        return run

    monkeypatch.setattr(gv, "SECTIONS", replaced(fake))
    done = gv.run_sections(context(common.QUICK), skip=["nvml"])
    assert calls == ["overhead", "precisions", "quickstart", "multigpu"]
    assert done["nvml"] == {"status": "skipped", "reason": "skipped with --skip"}
    assert done["precisions"]["status"] == "failed"
    assert done["precisions"]["reason"] == "RuntimeError: the last line says it"
    assert done["flops"]["status"] == "skipped"
    assert "needs the precisions section" in done["flops"]["reason"]
    assert done["overhead"]["status"] == "ok" and "elapsed_s" in done["overhead"]


def test_a_section_that_no_longer_fits_is_not_started(monkeypatch):
    ran = []
    sections = tuple(gv.Section(s.name, s.title, lambda ctx, n=s.name: ran.append(n) or {},
                                s.render, s.estimate_s, ()) for s in gv.SECTIONS)
    monkeypatch.setattr(gv, "SECTIONS", sections)
    done = gv.run_sections(context(common.FULL, elapsed_s=gv.BUDGET_S - 60), skip=[])
    assert ran == ["nvml", "flops", "multigpu"]  # 50, 1 and 45 s fit in the last 60; the
    # others do not
    assert done["overhead"]["status"] == "skipped"
    assert "of the 480 s budget left; it needs about 90 s" in done["overhead"]["reason"]


def test_a_section_past_its_time_limit_is_stopped_and_the_others_still_run(monkeypatch):
    def sleeper(ctx):
        time.sleep(30)
        return {}

    monkeypatch.setattr(gv, "SECTION_GRACE_S", 0.0)
    monkeypatch.setattr(gv, "SECTIONS", (
        gv.Section("nvml", "a section that hangs", sleeper, lambda entry: [], {"quick": 1}),
        gv.Section("flops", "a quick one", lambda ctx: {"rows": []}, lambda entry: [],
                   {"quick": 0}),
    ))
    began = time.perf_counter()
    done = gv.run_sections(context(common.QUICK, budget_s=2.0), skip=[])
    assert time.perf_counter() - began < 10
    assert done["nvml"]["status"] == "failed"
    assert done["nvml"]["reason"] == "timed out after 2 s"
    assert done["flops"]["status"] == "skipped"  # nothing of the budget was left for it


def test_the_quickstart_section_stops_its_sweep_at_its_time_limit(tmp_path):
    ctx = context(common.QUICK)
    ctx.time_limit_s = 36.0  # 35 s are kept for stopping: the sweep gets 1 s
    began = time.perf_counter()
    with pytest.raises(RuntimeError, match="the sweep was stopped after 1 s"):
        quickstart.check(ctx)
    assert time.perf_counter() - began < 35


def test_a_budget_must_be_a_positive_number_of_seconds(capsys):
    with pytest.raises(SystemExit) as stop:
        gv.parse_args(["--budget", "0"])
    assert stop.value.code == 2
    assert "--budget: a number of seconds above 0" in capsys.readouterr().err


# --------------------------------------------------------------------------- names and peaks


@pytest.mark.parametrize(("name", "slug"), [
    ("NVIDIA H200", "nvidia-h200"),
    ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
    ("Tesla V100-SXM2-16GB", "tesla-v100-sxm2-16gb"),
    ("  NVIDIA  A100 / PCIe (40GB) ", "nvidia-a100-pcie-40gb"),
    ("", "unknown-gpu"),
    (None, "unknown-gpu"),
])
def test_slugify(name, slug):
    assert common.slugify(name) == slug


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H200", "H200"),
    ("  nvidia  H200 ", "H200"),  # case and runs of spaces aside, exactly
    ("NVIDIA GH200 480GB", None),  # contains "H200", and is another part
    ("NVIDIA GH200", None),
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", None),
    ("NVIDIA H200 NVL", None),
    ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", None),  # a MIG instance: not the whole part
    ("NVIDIA A100-SXM4-80GB", None),
    (None, None),
])
def test_the_peak_table_matches_device_names_exactly(name, peak):
    assert flops.peak_for(name) == peak


def test_the_peak_table_holds_dense_datasheet_rates():
    for device, rates in flops.PEAK_TFLOPS.items():
        assert set(rates) == {"fp32", "tf32", "bf16", "fp16"}
        assert rates["bf16"] == rates["fp16"]
        assert abs(rates["bf16"] - 2 * rates["tf32"]) <= 1  # halved sheet figures, rounded
        assert rates["tf32"] > rates["fp32"]
        assert "datasheet" in flops.PEAK_SOURCE[device]
    assert flops.PEAK_TFLOPS["H200"] == flops.PEAK_TFLOPS["H100 SXM"]  # the same Hopper die
    assert set(flops.DEVICE_NAMES.values()) == set(flops.PEAK_TFLOPS)


# --------------------------------------------------------------------------- the report

SPREAD = {"median": 1.00412, "q1": 1.0012, "q3": 1.00733, "min": 0.99871, "max": 1.01234}


def fake_result() -> dict[str, Any]:
    """A result dict as main() builds it, every section ok, with unrounded figures."""
    return {
        "command": "python benchmarks/gpu/validate.py --quick",
        "mode": "quick", "settings": {"mode": "quick", "idle_s": 2.0, "short_s": 1.0,
                                      "long_s": 10.0, "overhead_rounds": 3, "steps": 100},
        "started_at": "2026-11-30T10:00:00+00:00", "budget_s": 480.0, "total_s": 273.456,
        "machine": {"hostname": "gpu-host", "cpu": "Intel Xeon Platinum 8480+", "cores": 16,
                    "platform": "Linux-6.18.44-x86_64-with-glibc2.39"},
        "gpu": {"name": "NVIDIA H200", "count": 1, "memory_gib": 139.8, "capability": "9.0",
                "device": "GPU-5d3a1f0e-7b2c-4e8a-9c1d-0a2b3c4d5e6f",
                "driver": "580.159.04", "power_limit_w": 700.0,
                "energy_source": "nvml_energy_counter", "power_reading": "instant",
                "scope": None, "nvml_unavailable": None},
        "versions": {"python": "3.12.3", "torch": "2.11.0+cu130", "cuda": "13.0",
                     "cudnn": 91300, "lightning": "2.6.6", "greenbench": "0.1.0"},
        "commit": "0c6db72f00d1e2a3b4c5d6e7f8091a2b3c4d5e6f", "uncommitted_changes": True,
        "sections": {
            "nvml": {"status": "ok", "elapsed_s": 17.83, "sample_hz": 10.0, "matmul_n": 8192,
                     "matmul_dtype": "bfloat16", "warn_above": 0.05, "rows": [
                         nvml_row("idle", 2.0013, 143.271, 141.902, 71.6, 0.00955, None),
                         nvml_row("short", 1.0271, 688.114, 702.655, 670.0, 0.02113, 771.3),
                         nvml_row("long", 10.0322, 6954.812, 7104.331, 693.2, 0.0215, 768.9),
                     ]},
            "overhead": {"status": "ok", "elapsed_s": 31.26, "rounds": 3, "rounds_planned": 3,
                         "ratio": dict(SPREAD), "control_ratio": {
                             "median": 0.99934, "q1": 0.99512, "q3": 1.00213, "min": 0.99347,
                             "max": 1.00457},
                         "step_ms": 3.2146, "target": 1.01, "met": True, "model": "gan",
                         "width": 1.0, "image_size": 32, "batch_size": 128,
                         "precision": "32-true", "batches": 300, "timed_from": 50},
            "precisions": {"status": "ok", "elapsed_s": 97.54, "wall_s": 95.127,
                           "exit_code": 0, "steps": 100, "batch_size": 128, "image_size": 32,
                           "width": 1.0, "rows": [
                               precision_row("gan", "32-true", 1.2345, 812.55, 603.21, 0.7134),
                               precision_row("gan", "bf16-true", 1.1093, 760.12, 551.87, 2.9051,
                                             status="diverged", reason="loss is nan at 37"),
                               {"model": "vae", "precision": "16-true", "status": "not run",
                                "reason": "the sweep was stopped at its time limit"},
                           ]},
            "flops": {"status": "ok", "elapsed_s": 0.02, "peak_device": "H200",
                      "peak_source": "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column",
                      "peak_tflops": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5,
                                      "fp16": 989.5},
                      "gpu_name": "NVIDIA H200", "power_limit_w": 700.0,
                      "known_devices": "H100 SXM, H100 PCIe, H200", "rows": [
                          {"precision": "32-true", "status": "ok", "peak_dtype": "tf32",
                           "gflop_per_step": 6.094, "batches": 100, "fit_s": 1.23,
                           "fit_gpu_j": 603.2, "tflops": 0.5, "gflop_per_j": 1.01,
                           "peak_tflops": 494.5, "peak_gflop_per_j": 706.4,
                           "share_of_peak": 0.00143, "reason": None},
                          {"precision": "bf16-true", "status": "diverged", "peak_dtype": "bf16",
                           "gflop_per_step": None, "batches": None, "fit_s": None,
                           "fit_gpu_j": None, "tflops": None, "gflop_per_j": None,
                           "peak_tflops": 989.5, "peak_gflop_per_j": 1413.6,
                           "share_of_peak": None, "reason": "diverged: loss is nan at 37"},
                      ]},
            "quickstart": {"status": "ok", "elapsed_s": 88.17, "wall_s": 87.954, "points": 2,
                           "target_s": 180.0, "rows": [
                               {"model": "gan", "precision": "32-true", "width": 0.5,
                                "status": "ok", "training_s": 2.113, "process_s": 6.381},
                               {"model": "vae", "precision": "bf16-mixed", "width": 1.0,
                                "status": "ok", "training_s": 1.874, "process_s": 5.902},
                           ]},
            "multigpu": {"status": "ok", "elapsed_s": 41.3, "gpus": 2, "wall_s": 40.82,
                         "exit_code": 0, "stopped": False, "steps": 100, "rows": [
                             {"world_size": 1, "status": "ok", "reason": None, "fit_s": 1.91,
                              "fit_j": 903.4, "fit_gpu_j": 655.2, "gpu_scope": None,
                              "device_j": [701.7], "samples": 12800, "j_per_1k_samples": 68.31},
                             {"world_size": 2, "status": "ok", "reason": None, "fit_s": 1.17,
                              "fit_j": 1012.9, "fit_gpu_j": 788.6, "gpu_scope": "shared_device",
                              "device_j": [422.5, 410.8], "samples": 25600,
                              "j_per_1k_samples": 38.77},
                         ]},
        },
    }


def nvml_row(window, seconds, counter_j, sampled_j, mean_w, rel, tflops):
    return {"window": window, "seconds": seconds, "source": "nvml_energy_counter",
            "power_reading": "instant",
            "counter_j": counter_j, "sampled_j": sampled_j, "mean_w": mean_w,
            "cross_check_rel": rel, "period_s": 0.1003, "period_basis": "counter_updates",
            "matmul_tflops": tflops, "sm_clock_mhz": 1980 if tflops else 345,
            "temperature_c": 41 if tflops else 33, "pstate": "P0", "faults": 0, "note": None}


def precision_row(model, precision, fit_s, fit_j, fit_gpu_j, kid, status="ok", reason=None):
    return {"model": model, "precision": precision, "status": status, "reason": reason,
            "fit_s": fit_s, "fit_j": fit_j, "fit_gpu_j": fit_gpu_j,
            "gpu_source": "nvml_energy_counter", "fit_reliable": False,
            "fit_reliability_reason": "1.23 s is shorter than 10 periods of CodeCarbonMeter",
            "fit_cross_check_rel": 0.01873, "generate_j_per_1k": 41.2391, "kid": kid,
            "process_s": 7.2291}


def test_the_report_has_every_section_and_its_table():
    report = gv.render_report(fake_result())
    assert report.startswith("# GPU validation: NVIDIA H200\n")
    for section in gv.SECTIONS:
        assert f"\n## {section.title}\n" in report
        assert f"| {section.title} | ok |" in report
    assert "not run" not in report.replace("| not run: the sweep was stopped", "")
    assert ("| window | seconds | power reading | counter J | sampled J | mean W | "
            "cross_check_rel |") in report
    assert "| long | 10.032 | instant | 6954.812 | 7104.331 | 693.2 | 2.15 % | 0.1003 |" in report
    assert ("| idle | 2.001 | instant | 143.271 | 141.902 | 71.6 | 0.95 % | 0.1003 | "
            "counter_updates | n/a |") in report
    assert "energy from nvml_energy_counter, power read instant." in report
    assert "**median ratio 1.0041** (target <= 1.01: met)" in report
    assert "| with / without the callback | 1.0041 | 1.0012 to 1.0073 | 0.9987 | 1.0123 |" \
        in report
    assert ("| gan | 32-true | ok | 1.23 | 812.5 | 603.2 | no: 1.23 s is shorter than 10 "
            "periods of CodeCarbonMeter | 1.87 % | 41.24 | 0.7134 | 7.2 |") in report
    assert "| gan | bf16-true | diverged: loss is nan at 37 |" in report
    assert ("| vae | 16-true | not run: the sweep was stopped at its time limit |"
            + " n/a |" * 8) in report
    assert "Peak: H200, from the NVIDIA H200 Tensor Core GPU datasheet" in report
    assert "fp32 67.0, tf32 494.5, bf16 989.5, fp16 989.5 TFLOP/s" in report
    assert "Board power limit: 700.0 W (NVML, enforced)" in report
    assert ("| 32-true | ok | 6.094 | 100 | 1.23 | 603.2 | 0.500 | 1.01 | tf32 | 494.5 | 706.4 "
            "| 0.143 % |  |") in report
    assert "| bf16-true | diverged | n/a |" in report and "diverged: loss is nan at 37 |" in report
    assert "**88.0 s**" in report
    assert "| gan | 32-true | 0.5 | ok | 2.1 | 6.4 |" in report
    assert "driver 580.159.04, board power limit 700.0 W" in report
    assert "torch 2.11.0+cu130 (CUDA 13.0, cuDNN 91300)" in report
    assert "commit 0c6db72f00d1e2a3b4c5d6e7f8091a2b3c4d5e6f with uncommitted changes." in report


def test_a_section_that_did_not_run_says_so_and_why():
    result = fake_result()
    result["sections"]["nvml"] = {"status": "failed", "elapsed_s": 0.61,
                                  "reason": "RuntimeError: NVML cannot measure cuda:0"}
    result["sections"]["overhead"] = {"status": "skipped", "reason": "skipped with --skip"}
    result["sections"]["flops"] = {"status": "skipped", "reason": (
        "needs the precisions section, which did not run to completion")}
    del result["sections"]["quickstart"]
    result["gpu"].update(driver=None, power_limit_w=None, nvml_unavailable="NVML library "
                         "not found")
    report = gv.render_report(result)
    assert ("| NVML energy counter against sampled power | not run: failed (RuntimeError: "
            "NVML cannot measure cuda:0) | 0.6 |") in report
    assert "| EnergyCallback overhead on the GPU | not run: skipped with --skip | n/a |" in report
    assert ("\n## NVML energy counter against sampled power\n\nnot run: failed (RuntimeError: "
            "NVML cannot measure cuda:0).\n") in report
    assert "\n## EnergyCallback overhead on the GPU\n\nnot run: skipped with --skip.\n" in report
    assert ("not run: needs the precisions section, which did not run to completion.\n"
            in report)
    assert "\n## Quickstart wall time\n\nnot run: not in the result.\n" in report
    assert "driver unknown, board power limit n/a W" in report
    assert "(NVML: NVML library not found)" in report
    assert "counter J" not in report and "median ratio" not in report  # no empty tables
    assert "| window |" not in report


def test_an_unknown_device_has_no_peak():
    result = fake_result()
    result["gpu"]["name"] = "NVIDIA A100-SXM4-80GB"
    result["sections"]["flops"].update(peak_device=None, peak_source=None, peak_tflops=None,
                                       gpu_name="NVIDIA A100-SXM4-80GB")
    for row in result["sections"]["flops"]["rows"]:
        row.update(peak_tflops=None, peak_gflop_per_j=None, share_of_peak=None)
    report = gv.render_report(result)
    assert ("Peak: unknown for NVIDIA A100-SXM4-80GB (the table holds H100 SXM, H100 PCIe, "
            "H200 only).") in report
    assert "| 32-true | ok | 6.094 | 100 | 1.23 | 603.2 | 0.500 | 1.01 | tf32 | n/a | n/a | n/a |" \
        in report
    assert check_no_invented_numbers(report, result) > 50


def test_the_report_invents_no_number():
    result = fake_result()
    assert check_no_invented_numbers(gv.render_report(result), result) > 100
    for name in ("nvml", "precisions", "quickstart"):
        result["sections"][name] = {"status": "failed", "elapsed_s": 1.5,
                                    "reason": "OSError: disk 3 is full"}
    assert check_no_invented_numbers(gv.render_report(result), result) > 20


def test_the_report_renders_a_result_read_back_from_its_json():
    result = fake_result()
    assert gv.render_report(json.loads(json.dumps(result))) == gv.render_report(result)
    before = copy.deepcopy(result)
    gv.render_report(result)
    assert result == before  # rendering changes nothing


NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:e[+-]?\d+)?(?!\w)")


def check_no_invented_numbers(report: str, result: dict[str, Any]) -> int:
    """Every number in ``report`` is one of ``result``'s, as displayed (rounded; ``%``: times
    100); numbers inside the result's strings (versions, reasons, names) are theirs. Returns
    how many numbers were checked."""
    numbers, strings = [], []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            strings.append(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers.append(float(value))

    walk(result)
    for text in sorted((s for s in strings if re.search(r"\d", s)), key=len, reverse=True):
        report = re.sub(rf"(?<![\w.]){re.escape(text)}(?!\w)", " ", report)
    checked = 0
    for match in NUMBER.finditer(report):
        token = match.group().replace(",", "")
        percent = report[match.end():match.end() + 2] == " %"
        decimals = len(token.split(".")[1]) if "." in token else 0
        shown = {f"{(100 * v if percent else v):.{decimals}f}" for v in numbers}
        assert token in shown, f"{token!r} in the report is none of the result's numbers: " \
            f"...{report[max(0, match.start() - 60):match.end() + 20]}..."
        checked += 1
    return checked


# --------------------------------------------------------------------------- the NVML window


def test_an_idle_nvml_window_compares_the_counter_with_sampled_power(monkeypatch):
    """The fake NVML on the real clock: 120 W, a counter updating every 100 ms, power reads
    3 % high."""
    fake = FakeNvml(hopper(power_mw=120_000, power_read_gain=1.03), clock=RealClock())
    fake.install(monkeypatch)
    row = nvml_counter.window("idle", 0.6, None, device=0)
    assert row["window"] == "idle" and row["source"] == "nvml_energy_counter"
    assert row["power_reading"] == "instant"
    assert 0.6 <= row["seconds"] < 3  # a loaded machine may oversleep
    assert row["period_basis"] == "counter_updates" and 0.05 <= row["period_s"] <= 0.3
    assert row["counter_j"] / 12 == pytest.approx(round(row["counter_j"] / 12))  # whole updates
    assert row["sampled_j"] == pytest.approx(123.6 * row["seconds"], rel=0.05)
    assert row["cross_check_rel"] == pytest.approx(  # of the unrounded joules
        abs(row["sampled_j"] - row["counter_j"]) / row["counter_j"], abs=1e-4)
    assert row["mean_w"] == pytest.approx(row["counter_j"] / row["seconds"], abs=0.2)
    assert (row["sm_clock_mhz"], row["temperature_c"], row["pstate"]) == (1980, 45, "P0")
    assert row["matmul_tflops"] is None and row["faults"] == 0
    assert row["note"] == "too short for greenbench to judge (10 x 0.1 s)"


def test_without_an_energy_counter_the_window_says_its_joules_are_sampled(monkeypatch):
    FakeNvml(FakeGpu("GPU-aaaa1111-0000", energy_mj=None, instant_field=False),
             clock=RealClock()).install(monkeypatch)
    row = nvml_counter.window("idle", 0.3, None, device="GPU-aaaa1111-0000")
    assert row["source"] == "nvml_power_sampling" and row["period_basis"] == "power_averaging"
    assert row["power_reading"] == "averaged_1s"
    assert row["sampled_j"] is None and row["cross_check_rel"] is None
    assert row["note"].startswith("no energy counter (")
    assert row["note"].endswith("): joules are sampled power")


def test_a_mig_instance_says_its_window_is_the_whole_gpus(monkeypatch):
    mig = "MIG-1f2e3d4c-0000-4000-8000-000000000001"
    FakeNvml(hopper(mig_instances=[mig]), clock=RealClock()).install(monkeypatch)
    row = nvml_counter.window("idle", 0.3, None, device=mig)
    assert "scope shared_device: a MIG instance" in row["note"]


# --------------------------------------------------------------------------- what it runs


def test_the_precision_sweep_is_a_valid_sweep_of_every_cuda_precision(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**precisions.precision_sweep(common.FULL), "output_dir": "x"}))
    specs = expand(load_sweep(path))
    assert len(specs) == 10
    assert {(s.config["model"], s.config["precision"]) for s in specs} == {
        (m, p) for m in ("gan", "vae")
        for p in ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")}
    assert {s.config["image_size"] for s in specs} == {32}
    assert {s.config["steps"] for s in specs} == {common.FULL.steps}
    assert {s.config["width"] for s in specs} == {1.0}
    assert precisions.precision_sweep(common.QUICK)["train"] == {"steps": common.QUICK.steps}


def test_rows_of_a_real_point_say_what_the_record_says_and_no_more():
    """A real GAN point on this CPU: no GPU joules, so no FLOP per joule, and its reason."""
    record = run_point(tiny_spec(model="gan", precision="32-true", width=1.0)).record
    assert record["status"] == "ok"
    fit = record["energy"]["windows"]["fit"]
    row = precisions.precision_row(record)
    assert row["status"] == "ok" and row["reason"] is None
    assert row["fit_s"] == round(fit["duration_s"], 2)
    assert row["fit_j"] == round(fit["total_j"], 1)
    assert row["fit_gpu_j"] is None and row["gpu_source"] == "unavailable"
    assert row["fit_reliable"] is fit["reliable"]
    assert row["kid"] == round(record["quality"]["final"]["kid"], 4)
    assert row["generate_j_per_1k"] == round(1000 * record["generation"]["j_per_image"], 2)

    found = flops.flops_row(record, "H200", 700.0, cudnn_tf32=True)
    assert found["batches"] == record["train"]["batches"] == 4
    assert record["train"]["optimizer_steps"] == 8  # two optimizers: not the step count
    assert found["gflop_per_step"] == round(record["flops_per_step"] / 1e9, 3)
    assert found["gflop_per_j"] is None and found["fit_gpu_j"] is None
    assert found["reason"] == "no GPU joules in the fit window: no GPU in use"
    assert (found["peak_dtype"], found["peak_tflops"], found["peak_gflop_per_j"]) == (
        "tf32", 494.5, 706.4)
    assert found["share_of_peak"] is None
    assert flops.flops_row(record, None, None, cudnn_tf32=False)["peak_dtype"] == "fp32"
    assert flops.flops_row(record, None, None)["peak_tflops"] is None

    failed = {**record, "status": "failed", "reason": "CUDA error: out of memory"}
    assert flops.flops_row(failed, "H200", 700.0)["reason"] == "failed: CUDA error: out of memory"


# --------------------------------------------------------------------------- the script


def test_without_a_cuda_gpu_it_refuses_in_one_line_from_any_folder(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine with one
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("validate: no CUDA GPU")
    assert not (tmp_path / "out").exists()


def test_main_writes_the_report_and_its_json_under_the_gpus_name(tmp_path, monkeypatch):
    """main() with the GPU check and the header passed and each section's GPU work replaced:
    the report and the JSON land in --out, and a failed section makes the exit code 1."""
    header = {k: v for k, v in fake_result().items() if k not in ("sections", "total_s")}

    def describe(ctx, argv):
        ctx.gpu_name = header["gpu"]["name"]
        return {**header, "command": " ".join(["python", "benchmarks/gpu/validate.py", *argv])}

    def fake(name):
        def run(ctx):
            if name == "overhead":
                raise ValueError("no step was timed")
            return fake_result()["sections"][name]
        return run

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(gv, "gpu_missing", lambda: None)
    monkeypatch.setattr(gv, "describe", describe)
    monkeypatch.setattr(gv, "SECTIONS", replaced(fake))
    assert gv.main(["--quick", "--out", str(tmp_path / "out"), "--skip", "quickstart"]) == 1
    report = (tmp_path / "out" / "gpu-validation-nvidia-h200.md").read_text()
    result = json.loads((tmp_path / "out" / "gpu-validation-nvidia-h200.json").read_text())
    assert gv.render_report(result) == report
    assert result["mode"] == "quick" and result["total_s"] >= 0
    assert result["sections"]["overhead"]["status"] == "failed"
    assert "| EnergyCallback overhead on the GPU | not run: failed (ValueError: no step was " \
        "timed) |" in report
    assert "\n## Quickstart wall time\n\nnot run: skipped with --skip.\n" in report
    assert "| 6954.812 | 7104.331 |" in report  # the nvml section's rows, as it returned them
    assert check_no_invented_numbers(report, result) > 50


@pytest.mark.gpu
def test_quick_run_on_a_gpu_writes_the_report(tmp_path):
    import torch

    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    name = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
    report = (tmp_path / f"gpu-validation-{name}.md").read_text()
    assert (tmp_path / f"gpu-validation-{name}.json").exists()
    for title in ("NVML energy counter against sampled power", "EnergyCallback overhead",
                  "Every precision on CUDA", "Achieved FLOP per joule", "Quickstart wall time"):
        assert f"| {title}" in report and f"\n## {title}" in report
    assert "not run: failed" not in report


def test_the_multi_gpu_section_says_it_did_not_run_with_fewer_than_two_gpus():
    import torch

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has two or more GPUs: the section runs")
    ctx = common.Context(common.QUICK, started=0.0, budget_s=60.0, time_limit_s=60.0)
    entry = multi_gpu.check(ctx)
    assert entry["status"] == "skipped"
    assert entry["reason"].startswith("needs two or more GPUs; this machine shows ")


def test_a_multi_gpu_row_is_what_the_record_says():
    record = {"status": "ok", "reason": None, "train": {"world_size": 2, "samples_seen": 25600},
              "energy": {"windows": {
                  "fit": {"duration_s": 1.1719, "total_j": 1012.94,
                          "components": {"gpu": {"joules": 788.61, "scope": "shared_device"}}},
                  "train": {"j_per_1k_samples": 38.7712}},
                  "meters": {"NvmlMeter": {"devices": [{"energy_j": 422.512},
                                                       {"energy_j": 410.849}]}}}}
    assert multi_gpu.point_row(record) == {
        "world_size": 2, "status": "ok", "reason": None, "fit_s": 1.17, "fit_j": 1012.9,
        "fit_gpu_j": 788.6, "gpu_scope": "shared_device", "device_j": [422.5, 410.8],
        "samples": 25600, "j_per_1k_samples": 38.77}
    assert multi_gpu.multi_gpu_sweep(common.QUICK)["grid"] == {"trainer.devices": [1, 2]}
