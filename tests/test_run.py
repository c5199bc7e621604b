"""`greenbench run` as processes: the real command on the smallest real point there is
(``tests.helpers.SMALLEST_SWEEP``), its points in their own processes, interrupted (Ctrl-C,
kill -9, a point's process killed), locked, and a point that fails. What the runner decides
(skip, force, resume, what runs again) is tested without processes in test_runner.py; a sweep
of the reference models end to end in test_report.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import (
    TRAIN_COUNT,
    alive,
    children_of,
    cli,
    greenbench,
    idx_bytes,
    read_records,
    write_idx_dataset,
    write_smallest_sweep,
    write_sweep,
)

FOUR_POINTS = "grid:\n  precision: [32-true, bf16-mixed]\n  seed: [0, 1]\n"
FOREVER = 100_000  # training batches: a point that trains until it is stopped


def snapshot(records_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in records_dir.iterdir()}


TINY_WITHOUT_TRAIN = """\
name: tiny
dataset: {name: digits, image_size: 8}
eval: {num_samples: 50, importance_samples: 4}
energy: {idle_seconds: 0.3, warmup_steps: 2}
width: 0.25
latent_dim: 8
batch_size: 32
"""


def test_a_failing_point_is_recorded_with_its_traceback_in_the_log_and_exit_1(
        tmp_path: Path) -> None:
    # A dataset folder whose labels pass the header check but are out of range: the point fails
    # while loading, in its own process.
    write_idx_dataset(tmp_path / "data", "mnist")
    labels = tmp_path / "data" / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.full(TRAIN_COUNT, 12, dtype=np.uint8)))
    write_sweep(tmp_path, "", base=TINY_WITHOUT_TRAIN.replace(
        "dataset: {name: digits, image_size: 8}",
        "dataset: {name: mnist, root: data, image_size: 8}\ntrain: {steps: 2}",
    ).replace("batch_size: 32", "batch_size: 4"))

    failed = greenbench("run", "sweep.yaml", cwd=tmp_path)

    assert failed.returncode == 1
    (record,) = read_records(tmp_path / "runs/tiny").values()
    assert record["status"] == "failed"
    assert "labels outside 0..9" in record["reason"]
    assert "Traceback" in (tmp_path / "runs/tiny/logs" / f"{record['run_id']}.log").read_text()
    assert "1 failed" in failed.stderr


@pytest.fixture
def start_sweep() -> Iterator[Callable[[Path], subprocess.Popen]]:
    """Start ``greenbench run sweep.yaml`` in the background; whatever a test leaves running
    (the sweep, and any point process it started) is killed when the test ends."""
    started: list[subprocess.Popen] = []

    def start(cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "greenbench", "run", "sweep.yaml"],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=None if env is None else {**os.environ, **env},
        )
        started.append(process)
        return process

    yield start
    for process in started:
        points = children_of(process.pid)
        if process.poll() is None:
            process.kill()
            process.communicate()
        for pid in points:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def four_points_one_recorded(
    tmp_path: Path, start_sweep: Callable[[Path], subprocess.Popen]
) -> tuple[subprocess.Popen, Path, int]:
    """A four-point sweep running in the background with at least one point recorded and the
    next point's process started: (the sweep, its records folder, that point's pid)."""
    write_smallest_sweep(tmp_path, FOUR_POINTS)
    records_dir = tmp_path / "runs" / "tiny" / "records"
    sweep = start_sweep(tmp_path)
    wait_for(lambda: records_dir.exists() and len(list(records_dir.iterdir())) >= 1)
    points: list[int] = []

    def point_running() -> bool:
        points[:] = children_of(sweep.pid)
        return bool(points)

    wait_for(point_running)
    return sweep, records_dir, points[0]


def test_kill_9_leaves_complete_records_and_the_next_run_resumes(
    tmp_path: Path, start_sweep: Callable[[Path], subprocess.Popen]
) -> None:
    sweep, records_dir, child = four_points_one_recorded(tmp_path, start_sweep)

    sweep.send_signal(signal.SIGKILL)
    sweep.communicate(timeout=30)

    wait_for(lambda: not alive(child), timeout=5)  # the orphaned point stops by itself
    survivors = snapshot(records_dir)
    assert 1 <= len(survivors) < 4
    for name, (_, content) in survivors.items():
        assert json.loads(content)["run_id"] == name.removesuffix(".json")

    resumed = greenbench("run", "sweep.yaml", cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(survivors)} already recorded, {4 - len(survivors)} to run" in resumed.stderr
    after = snapshot(records_dir)
    assert len(after) == 4  # every point exactly once
    assert {name: after[name] for name in survivors} == survivors  # finished points not re-run
    assert all(json.loads(content)["status"] == "ok" for _, content in after.values())
    assert not list((tmp_path / "runs" / "tiny" / ".tmp").iterdir())


@pytest.mark.parametrize("start", ["warm", "cold"])
def test_kill_9_during_a_point_start_up_leaves_no_orphan_and_no_temporary_files(
    tmp_path: Path, start_sweep: Callable[[Path], subprocess.Popen], start: str
) -> None:
    # The point's process (or the fork server it comes from) is killed with its parent before
    # it has imported torch: it must not go on to train the point beside the resumed run's own.
    write_smallest_sweep(tmp_path, f"executor: {{start: {start}}}\n")
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    sweep = start_sweep(tmp_path, env={"TMPDIR": str(scratch)})
    points: list[int] = []

    def point_started() -> bool:
        points[:] = children_of(sweep.pid)
        return bool(points)

    wait_for(point_started, timeout=60)
    sweep.send_signal(signal.SIGKILL)
    sweep.communicate(timeout=30)
    wait_for(lambda: not alive(points[0]), timeout=5)
    assert not (tmp_path / "runs" / "tiny" / "records").exists() or not list(
        (tmp_path / "runs" / "tiny" / "records").iterdir())

    resumed = greenbench("run", "sweep.yaml", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(read_records(tmp_path / "runs" / "tiny")) == 1
    assert not list((tmp_path / "runs" / "tiny" / ".tmp").iterdir())
    # Nothing of the killed run's is left in $TMPDIR. (Importing Lightning, which checking a
    # user's classes does in the parent, makes torch's own per-user cache folder there.)
    assert all(path.name.startswith("torchinductor_") for path in scratch.iterdir())


def test_ctrl_c_stops_the_point_and_says_how_to_resume(
    tmp_path: Path, start_sweep: Callable[[Path], subprocess.Popen]
) -> None:
    sweep, records_dir, child = four_points_one_recorded(tmp_path, start_sweep)

    sweep.send_signal(signal.SIGINT)
    _, stderr = sweep.communicate(timeout=30)

    assert sweep.returncode == 130
    assert "interrupted" in stderr and "again to resume" in stderr
    assert "Traceback" not in stderr
    assert not alive(child)
    recorded = snapshot(records_dir)  # resuming from here: the kill -9 test and test_runner.py
    assert 1 <= len(recorded) < 4
    assert all(json.loads(content)["status"] == "ok" for _, content in recorded.values())


def test_a_point_whose_process_is_killed_is_failed_and_the_sweep_goes_on(
    tmp_path: Path, start_sweep: Callable[[Path], subprocess.Popen]
) -> None:
    # What an out-of-memory kill looks like from the parent: the point's process vanishes.
    write_smallest_sweep(tmp_path, "grid:\n  seed: [0, 1]\n", steps=FOREVER)
    sweep = start_sweep(tmp_path)
    wait_for(lambda: bool(children_of(sweep.pid)))
    first_child = children_of(sweep.pid)[0]
    time.sleep(1.0)
    os.kill(first_child, signal.SIGKILL)
    others: list[int] = []

    def second_started() -> bool:
        others[:] = [c for c in children_of(sweep.pid) if c != first_child]
        return bool(others)

    wait_for(second_started)
    os.kill(others[0], signal.SIGKILL)
    _, stderr = sweep.communicate(timeout=60)

    assert sweep.returncode == 1, stderr
    records = read_records(tmp_path / "runs" / "tiny")
    assert len(records) == 2
    for record in records.values():
        assert record["status"] == "failed"
        assert record["reason"].startswith("the point's process was killed by SIGKILL")
        assert record["environment"]["hostname"]
    assert "2 failed" in stderr


def test_two_runs_of_one_sweep_cannot_write_the_same_folder(
    tmp_path: Path, start_sweep: Callable[[Path], subprocess.Popen]
) -> None:
    write_smallest_sweep(tmp_path, steps=FOREVER)
    first = start_sweep(tmp_path)
    try:
        wait_for(lambda: (tmp_path / "runs" / "tiny" / ".lock").exists())
        second = cli("run", "sweep.yaml", cwd=tmp_path)  # the lock is the folder's, not a pid's
        assert second.returncode == 2
        assert "another greenbench run is writing to this folder" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
