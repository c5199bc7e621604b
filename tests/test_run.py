"""`greenbench run` end to end, through the real command: every point in its own process,
records stored atomically, resume, interruption (Ctrl-C and kill -9) and failures."""

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

from greenbench.records import SCHEMA
from greenbench.sweep.schema import expand, load_sweep
from tests.helpers import (
    TRAIN_COUNT,
    alive,
    children_of,
    greenbench,
    idx_bytes,
    read_records,
    write_idx_dataset,
    write_sweep,
)

FOUR_POINTS = "grid:\n  model: [gan, vae]\n  precision: [32-true, bf16-mixed]\n"


def snapshot(records_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in records_dir.iterdir()}


def test_run_records_every_point_and_a_second_run_skips_them_all(tmp_path: Path) -> None:
    write_sweep(tmp_path, FOUR_POINTS)

    first = greenbench("run", "sweep.yaml", cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    sweep_dir = tmp_path / "runs" / "tiny"
    records = read_records(sweep_dir)
    assert len(records) == 4
    assert {r["status"] for r in records.values()} == {"ok"}
    assert {(r["config"]["model"], r["config"]["precision"]) for r in records.values()} == {
        ("gan", "32-true"), ("gan", "bf16-mixed"), ("vae", "32-true"), ("vae", "bf16-mixed"),
    }
    for run_id, record in records.items():
        assert record["schema"] == SCHEMA and record["run_id"] == run_id
        assert record["sweep"] == "tiny"
        assert record["executor"] == "local" and record["node_concurrency"] == 1
        assert record["node"]
        assert record["timings"]["process_s"] >= record["timings"]["trainer_fit_s"] > 0
        assert (sweep_dir / "images" / f"{run_id}.png").read_bytes().startswith(b"\x89PNG")
        log = (sweep_dir / "logs" / f"{run_id}.log").read_text()
        assert f"greenbench: point {run_id} ok" in log
        assert record["energy"]["windows"]["train"]["components"]["cpu"]["joules"] > 0
        assert record["carbon"]["gco2"] > 0 and record["flops_per_step"] > 0
        codecarbon_csv = (sweep_dir / "codecarbon" / f"{run_id}.csv").read_text()
        assert codecarbon_csv.startswith("timestamp,project_name,run_id,")
    assert sorted(p.name for p in (sweep_dir / "records").iterdir()) == sorted(
        f"{run_id}.json" for run_id in records
    )
    assert "[4/4]" in first.stderr and "4 ok" in first.stderr
    assert "name: tiny" in (sweep_dir / "sweep.yaml").read_text()

    before = snapshot(sweep_dir / "records")
    sweep_file_mtime = (sweep_dir / "sweep.yaml").stat().st_mtime_ns
    second = greenbench("run", "sweep.yaml", cwd=tmp_path)

    assert second.returncode == 0, second.stderr
    assert "4 already recorded, 0 to run" in second.stderr
    assert "running" not in second.stderr and "[" not in second.stderr
    assert snapshot(sweep_dir / "records") == before  # no record rewritten, not even touched
    assert (sweep_dir / "sweep.yaml").stat().st_mtime_ns == sweep_file_mtime


def test_force_runs_recorded_points_again_and_run_ids_ignore_name_and_folder(
    tmp_path: Path,
) -> None:
    write_sweep(tmp_path)
    assert greenbench("run", "sweep.yaml", cwd=tmp_path).returncode == 0
    records_dir = tmp_path / "runs" / "tiny" / "records"
    before = snapshot(records_dir)

    forced = greenbench("run", "sweep.yaml", "--force", cwd=tmp_path)

    assert forced.returncode == 0, forced.stderr
    after = snapshot(records_dir)
    assert after.keys() == before.keys()
    assert all(after[name][0] != before[name][0] for name in after)

    # The same point under another name and output folder has the same run_id.
    write_sweep(tmp_path, "output_dir: elsewhere\n",
                base=(tmp_path / "sweep.yaml").read_text().replace("name: tiny", "name: other"))
    listed = greenbench("run", "sweep.yaml", "--dry-run", cwd=tmp_path)
    assert listed.returncode == 0
    assert listed.stdout.split()[0] == next(iter(before)).removesuffix(".json")


def test_a_diverging_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # An absurd learning rate makes the VAE's loss NaN within a few steps; the GAN point after
    # it must still run.
    write_sweep(tmp_path, "train: {steps: 20, lr: 1e3}\ngrid:\n  model: [vae, gan]\n",
                base=TINY_WITHOUT_TRAIN)

    done = greenbench("run", "sweep.yaml", cwd=tmp_path)

    assert done.returncode == 0, done.stderr  # diverged is an outcome, not a failure
    records = {r["config"]["model"]: r for r in read_records(tmp_path / "runs/tiny").values()}
    assert records["vae"]["status"] == "diverged"
    assert "loss became nan at step" in records["vae"]["reason"]
    assert records["gan"]["status"] in {"ok", "diverged"}
    assert records["gan"]["train"]["batches"] >= 1  # the point after the divergence ran
    assert "[2/2]" in done.stderr

    again = greenbench("run", "sweep.yaml", cwd=tmp_path)
    assert "2 already recorded, 0 to run" in again.stderr  # diverged is final


TINY_WITHOUT_TRAIN = """\
name: tiny
dataset: {name: digits, image_size: 8}
eval: {num_samples: 200, importance_samples: 4}
energy: {idle_seconds: 0.3, warmup_steps: 2}
width: 0.25
latent_dim: 8
batch_size: 32
"""


def test_a_failing_point_is_recorded_exit_1_and_runs_again_next_time(tmp_path: Path) -> None:
    # A dataset folder whose labels pass the header check but are out of range: the point fails
    # while loading. Once the file is repaired, the next run re-runs just that point.
    write_idx_dataset(tmp_path / "data", "mnist")
    labels = tmp_path / "data" / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    good_labels = labels.read_bytes()
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

    labels.write_bytes(good_labels)
    repaired = greenbench("run", "sweep.yaml", cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr
    assert "1 to run" in repaired.stderr
    (record,) = read_records(tmp_path / "runs/tiny").values()
    assert record["status"] == "ok"


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
    write_sweep(tmp_path, FOUR_POINTS)
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
    write_sweep(tmp_path, f"executor: {{start: {start}}}\n")
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
    assert not list(scratch.iterdir())  # nothing of the killed run's left in $TMPDIR


def test_a_file_in_records_that_is_not_a_record_is_run_again_and_replaced(
    tmp_path: Path,
) -> None:
    # Once a KeyError: 'status' that no resume could get past; every other kind of stranger is
    # covered by the store's own tests (tests/test_store.py).
    write_sweep(tmp_path)
    (run_id,) = [spec.run_id for spec in expand(load_sweep(tmp_path / "sweep.yaml"))]
    records = tmp_path / "runs" / "tiny" / "records"
    records.mkdir(parents=True)
    (records / f"{run_id}.json").write_text(json.dumps({"run_id": run_id}))
    done = greenbench("run", "sweep.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "no schema field" in done.stderr
    assert "its point runs again and replaces it" in done.stderr
    assert read_records(tmp_path / "runs" / "tiny")[run_id]["status"] == "ok"


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
    recorded = snapshot(records_dir)
    assert all(json.loads(content)["status"] == "ok" for _, content in recorded.values())

    resumed = greenbench("run", "sweep.yaml", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(snapshot(records_dir)) == 4


def test_a_point_whose_process_is_killed_is_failed_and_the_sweep_goes_on(
    tmp_path: Path, start_sweep: Callable[[Path], subprocess.Popen]
) -> None:
    # What an out-of-memory kill looks like from the parent: the point's process vanishes.
    write_sweep(tmp_path, "train: {steps: 100000}\ngrid:\n  seed: [0, 1]\n",
                base=TINY_WITHOUT_TRAIN)
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
    write_sweep(tmp_path, "train: {steps: 100000}\n", base=TINY_WITHOUT_TRAIN)
    first = start_sweep(tmp_path)
    try:
        wait_for(lambda: bool(children_of(first.pid)))
        second = greenbench("run", "sweep.yaml", cwd=tmp_path)
        assert second.returncode == 2
        assert "another greenbench run is writing to this folder" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)
