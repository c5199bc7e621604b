"""The Ray executor on a local Ray instance (loopback, 2 CPUs): the same records as the local
executor, resume, a worker killed mid-task, and attribution of shared node energy."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from greenbench.records import RunSpec
from greenbench.sweep.executors import LocalExecutor
from greenbench.sweep.progress import SweepProgress
from greenbench.sweep.runner import run_sweep
from greenbench.sweep.schema import ExecutorSection, load_sweep
from tests.helpers import (
    alive,
    descendants,
    read_records,
    write_class_sweep,
    write_smallest_sweep,
    write_sweep,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one Ray instance at a time, on one worker



@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def ray_executor():
    from greenbench.sweep.executors.ray import RayExecutor

    return RayExecutor(ExecutorSection(kind="ray"))


TWO_POINTS = "grid:\n  seed: [0, 1]\n"  # two points of one CPU each, on a 2-CPU node
FOUR_POINTS = "grid:\n  seed: [0, 1, 2, 3]\n"  # more points than CPUs: some share the node


def sweep_in(folder: Path, extra: str = TWO_POINTS, classes: bool = False):
    """A sweep in ``folder``: the smallest, or the smallest of a user's classes, which a Ray
    task imports from the sweep file's folder."""
    folder.mkdir()
    return load_sweep(write_class_sweep(folder, extra) if classes
                      else write_smallest_sweep(folder, extra))


def test_same_run_ids_and_statuses_as_local_and_resume_with_a_users_classes(
        tmp_path: Path, local_ray, monkeypatch) -> None:
    results = {}
    for name, executor in (("local", LocalExecutor()), ("ray", ray_executor())):
        monkeypatch.chdir(tmp_path)
        sweep = sweep_in(tmp_path / name, FOUR_POINTS, classes=True)
        monkeypatch.chdir(tmp_path / name)
        run_sweep(sweep, executor, SweepProgress(io.StringIO()))
        results[name] = read_records(tmp_path / name / "runs" / "tiny")

    local, on_ray = results["local"], results["ray"]
    assert sorted(local) == sorted(on_ray) and len(on_ray) == 4
    assert {k: r["status"] for k, r in local.items()} == {k: r["status"] for k, r in
                                                          on_ray.items()}
    for record in on_ray.values():  # a user's classes, imported in each task
        assert record["status"] == "ok", record["reason"]
        assert "val_acc" in record["quality"]["final"]
        assert record["executor"] == "ray" and record["node"]
        assert record["node_concurrency"] in (1, 2)
        shared = record["node_concurrency"] > 1
        cpu = record["energy"]["windows"]["train"]["components"]["cpu"]
        assert (cpu.get("scope") == "node_shared") == shared
    # Two CPUs, four points of one CPU each: some points did share the node.
    assert max(r["node_concurrency"] for r in on_ray.values()) == 2
    for record in local.values():
        assert record["executor"] == "local" and record["node_concurrency"] == 1

    records_dir = tmp_path / "ray" / "runs" / "tiny" / "records"
    before = {p.name: p.stat().st_mtime_ns for p in records_dir.iterdir()}
    progress = io.StringIO()
    monkeypatch.chdir(tmp_path / "ray")
    run_sweep(load_sweep(tmp_path / "ray" / "sweep.yaml"), ray_executor(),
              SweepProgress(progress))
    assert "4 already recorded, 0 to run" in progress.getvalue()
    assert {p.name: p.stat().st_mtime_ns for p in records_dir.iterdir()} == before


def test_exclusive_node_runs_one_point_per_node_and_owns_its_energy(
    tmp_path: Path, local_ray, monkeypatch
) -> None:
    from greenbench.sweep.executors.ray import RayExecutor

    sweep = sweep_in(tmp_path / "exclusive", "grid:\n  seed: [0, 1]\n")
    monkeypatch.chdir(tmp_path / "exclusive")
    run_sweep(sweep, RayExecutor(ExecutorSection(kind="ray", exclusive_node=True)),
              SweepProgress(io.StringIO()))
    records = read_records(tmp_path / "exclusive" / "runs" / "tiny")
    assert len(records) == 2  # two points that would share a 2-CPU node if they could
    for record in records.values():
        assert record["status"] == "ok" and record["node_concurrency"] == 1
        for window in record["energy"]["windows"].values():
            assert "scope" not in window["components"]["cpu"]
        assert not any("shared this node" in w for w in record["energy"]["warnings"])


def point_processes() -> dict[int, int]:
    """pid -> parent pid of the ``greenbench.point.child`` processes this test process started
    (through its own Ray instance); never those of another run on the same machine."""
    found = {}
    for pid in descendants(os.getpid()):
        stat = Path(f"/proc/{pid}/stat")
        try:
            command = (stat.parent / "cmdline").read_bytes()
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"greenbench.point.child" in command:
            found[pid] = parent
    return found


def test_a_killed_worker_is_retried_and_every_point_recorded_once(
    tmp_path: Path, local_ray, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(write_smallest_sweep(tmp_path, "grid:\n  seed: [0, 1]\n", steps=400))
    failures: list[BaseException] = []

    def drive() -> None:
        try:
            run_sweep(sweep, ray_executor(), SweepProgress(io.StringIO()))
        except BaseException as error:  # reported by the assertion below
            failures.append(error)

    driver = threading.Thread(target=drive)
    driver.start()
    deadline = time.monotonic() + 120
    while not point_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    child, worker = next(iter(point_processes().items()))
    time.sleep(1.0)  # well inside the task
    assert alive(child)  # so the record can only come from a retry
    os.kill(worker, signal.SIGKILL)
    driver.join(timeout=300)

    assert not driver.is_alive() and not failures
    records = read_records(tmp_path / "runs" / "tiny")
    assert len(records) == 2  # every point exactly once
    assert all(r["status"] == "ok" for r in records.values()), [
        r["reason"] for r in records.values()]
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)  # the killed attempt's point process stopped by itself


def test_ray_missing_is_a_clear_error_naming_the_extra(tmp_path: Path) -> None:
    write_sweep(tmp_path)
    code = ("import sys; sys.modules['ray'] = None; from greenbench.cli import main; "
            "sys.exit(main(['run', 'sweep.yaml', '--executor', 'ray']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: executor: ray needs Ray, which is not installed: "
                                   "pip install 'greenbench[ray]'")
    assert not (tmp_path / "runs").exists()


def test_address_needs_the_ray_executor(tmp_path: Path) -> None:
    write_sweep(tmp_path)
    done = subprocess.run([sys.executable, "-m", "greenbench", "run", "sweep.yaml",
                           "--address", "auto"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "--address: only the ray executor joins a cluster" in done.stderr


def test_ctrl_c_on_the_driver_stops_the_tasks(tmp_path: Path) -> None:
    # Resuming is the runner's, the same for every executor (tests/test_runner.py); here: the
    # interrupted driver's tasks stop, and their point processes with them.
    write_smallest_sweep(tmp_path, "grid:\n  seed: [0, 1]\n", steps=1_000_000)
    command = [sys.executable, "-m", "greenbench", "run", "sweep.yaml", "--executor", "ray"]
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not point_processes():
        assert time.monotonic() < deadline and driver.poll() is None
        time.sleep(0.1)
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=120)

    assert driver.returncode == 130, output
    assert "Run the same command again to resume" in output
    deadline = time.monotonic() + 15
    while point_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not point_processes()  # nothing keeps training after the interruption
    records = tmp_path / "runs" / "tiny" / "records"
    assert not records.exists() or not list(records.iterdir())


def test_resources_asked_per_point(monkeypatch) -> None:
    """GPUs default to one per rank (trainer.devices) where the cluster has them, 0 where it
    has none (the cluster's resources are faked: this machine has no GPU)."""
    from greenbench.sweep.executors.ray import RayExecutor

    def asked(cluster: dict, trainer: dict | None = None, **settings) -> dict:
        monkeypatch.setattr(ray, "nodes", lambda: [
            {"Alive": True, "Resources": {"CPU": 16.0}},
            {"Alive": False, "Resources": {"CPU": 64.0}},  # a dead node is not counted
        ])
        spec = RunSpec("x", "s", {"trainer": trainer} if trainer else {})
        return RayExecutor(ExecutorSection(kind="ray", **settings))._resources(
            spec, cluster.get("GPU", 0) > 0)

    assert asked({"CPU": 32.0, "GPU": 8.0}) == {"num_gpus": 1.0, "num_cpus": 1}
    assert asked({"CPU": 32.0, "GPU": 8.0}, {"devices": 4}) == {"num_gpus": 4.0, "num_cpus": 1}
    assert asked({"CPU": 32.0}, {"devices": 4}) == {"num_gpus": 0.0, "num_cpus": 1}
    assert asked({"CPU": 32.0}) == {"num_gpus": 0.0, "num_cpus": 1}
    assert asked({"CPU": 32.0, "GPU": 8.0}, {"devices": 4}, gpus_per_point=2,
                 cpus_per_point=4) == {"num_gpus": 2, "num_cpus": 4}
    assert asked({"CPU": 32.0}, exclusive_node=True) == {"num_gpus": 0.0, "num_cpus": 16.0}
