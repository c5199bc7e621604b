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
    executor._baseline = {"taken_at": "2026-01-01T00:00:00+00:00", "power_w": 1.0}
    spec = with_idle_every(tiny_spec(), 0)
    assert "baseline" not in executor._with_baseline(spec).energy
    assert executor._with_baseline(with_idle_every(tiny_spec(), 1e12)).energy["baseline"] == (
        executor._baseline)
