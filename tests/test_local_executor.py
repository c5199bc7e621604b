"""The local executor's point processes, warm and cold, and the idle baseline they share.

A warm start forks each point from one fork server per sweep (torch and Lightning imported
once); a cold start runs a new interpreter per point. Either way a point is its own process
with its own log and record, and the idle baseline is measured once per sweep and again when
older than ``energy.idle_every_s``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenbench.records import RunSpec
from greenbench.sweep.devices import cuda_visible_devices, devices_key
from greenbench.sweep.executors.local import LocalExecutor
from tests.helpers import class_spec, tiny_spec


def with_idle_every(spec: RunSpec, seconds: float) -> RunSpec:
    return dataclasses.replace(spec, energy={**spec.energy, "idle_every_s": seconds})


@pytest.fixture
def executors() -> Iterator[list[LocalExecutor]]:
    """Executors a test makes; their fork servers are stopped when it ends."""
    made: list[LocalExecutor] = []
    yield made
    for executor in made:
        executor.close()


def test_a_warm_start_gives_a_whole_point_with_its_own_log(
    tmp_path: Path, executors: list[LocalExecutor]
) -> None:
    # A cold start trains whole points in tests/test_run.py (the cold kill -9 test resumes).
    executor = LocalExecutor(scratch_dir=tmp_path / "scratch")
    executors.append(executor)
    result = executor.run(class_spec(tmp_path, seed=3))
    record = result.record
    assert record["status"] == "ok", record["reason"]
    assert record["timings"]["process_s"] > 0
    log = result.files[f"logs/{record['run_id']}.log"].decode()
    assert log.startswith(f"greenbench: point {record['run_id']} ")
    assert f"greenbench: point {record['run_id']} ok" in log
    executor.close()
    assert not (tmp_path / "scratch").exists()  # handoff folders and the server's are gone


def test_the_idle_baseline_is_measured_once_and_again_when_it_is_old(
    tmp_path: Path, executors: list[LocalExecutor]
) -> None:
    executor = LocalExecutor(scratch_dir=tmp_path / "scratch")
    executors.append(executor)
    def point(seed: int, idle_every_s: float) -> RunSpec:  # an idle baseline of 0.3 s
        spec = with_idle_every(class_spec(tmp_path, seed=seed), idle_every_s)
        return dataclasses.replace(spec, energy={**spec.energy, "idle_seconds": 0.3})

    first = executor.run(point(0, 600)).record
    second = executor.run(point(1, 600)).record
    third = executor.run(point(2, 0.01)).record  # older than that
    for record in (first, second, third):
        assert record["status"] == "ok", record["reason"]

    measured, shared, remeasured = (r["energy"]["baseline"] for r in (first, second, third))
    assert measured["shared"] is False and measured["age_s"] == 0.0
    assert shared["shared"] is True and shared["taken_by"] == first["run_id"]
    assert shared["taken_at"] == measured["taken_at"] and shared["age_s"] > 0
    assert shared["power_w"] == pytest.approx(first["energy"]["idle_power_w"])
    assert second["energy"]["windows"]["idle"] == first["energy"]["windows"]["idle"]
    train = second["energy"]["windows"]["train"]
    assert train["net_j"] == pytest.approx(
        max(0.0, train["total_j"] - shared["power_w"] * train["duration_s"]))
    assert remeasured["shared"] is False and remeasured["taken_at"] != measured["taken_at"]


def test_idle_every_s_zero_measures_a_baseline_in_every_point() -> None:
    executor = LocalExecutor()
    baseline = {"taken_at": "2026-01-01T00:00:00+00:00", "power_w": 1.0}
    executor._baselines[devices_key(tiny_spec())] = baseline
    spec = with_idle_every(tiny_spec(), 0)
    assert "baseline" not in executor._with_baseline(spec).energy
    assert executor._with_baseline(with_idle_every(tiny_spec(), 1e12)).energy["baseline"] == (
        baseline)


def test_a_baseline_is_shared_only_by_points_on_the_same_devices() -> None:
    # An idle baseline of one GPU, taken from a point on two, would leave the second GPU's idle
    # draw in every net figure: each device set has its own.
    executor = LocalExecutor()
    one, two = (with_idle_every(dataclasses.replace(tiny_spec(), config={
        **tiny_spec().config, "trainer": {"devices": n}}), 1e12) for n in (1, 2))
    measured = {"shared": False, "taken_at": "2026-01-01T00:00:00+00:00", "power_w": 9.0}
    executor._keep_baseline(one, {"run_id": "a", "energy": {
        "baseline": measured, "idle_power_w": 9.0, "windows": {"idle": {"duration_s": 1.0}}}})
    assert executor._with_baseline(one).energy["baseline"]["taken_by"] == "a"
    assert "baseline" not in executor._with_baseline(two).energy


def test_a_gpu_point_gets_the_first_of_the_gpus_the_node_shows() -> None:
    gpu = dataclasses.replace(tiny_spec(), config={**tiny_spec().config,
                                                   "trainer": {"devices": 2}})
    assert cuda_visible_devices(gpu, 4, None) == "0,1"
    assert cuda_visible_devices(gpu, 3, "GPU-aa, 5,7") == "GPU-aa,5"
    assert cuda_visible_devices(tiny_spec(), 4, None) == "0"  # one device by default
    assert cuda_visible_devices(gpu, 0, None) is None  # auto without GPUs: on the CPU
    cpu = dataclasses.replace(tiny_spec(), config={
        **tiny_spec().config, "trainer": {"devices": 2, "accelerator": "cpu"}})
    assert cuda_visible_devices(cpu, 4, None) is None
