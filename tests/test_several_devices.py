"""Points on several devices: a 2-rank CPU DDP point (gloo) against a 1-device point of the
same model, stop decisions made on one rank, a failing rank, kill -9 during a 2-rank point, and
the functions that decide the strategy, the rank count and whether this node has the GPUs.
Processes only where they are what is tested (a point's ranks are processes)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greenbench.errors import UserError
from greenbench.point.ranks import launched_strategy, world_size
from greenbench.records import RunSpec
from greenbench.sweep.devices import check_devices, visible_gpus
from tests.helpers import PROJECT, alive, children_of, cli, greenbench, read_records

# A user's project beside tinyproject: a callback that stops fit on one rank only, and a
# classifier that records the pid of each process that builds it and can fail on one rank.
EXTRAS = '''
import json, os
import lightning.pytorch as pl
from tinyproject import BlobsClassifier


class StopOnRank(pl.Callback):
    def __init__(self, rank: int, batches: int):
        self.rank, self.batches, self.seen = rank, batches, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen += 1
        if trainer.global_rank == self.rank and self.seen == self.batches:
            trainer.should_stop = True


class PidClassifier(BlobsClassifier):
    def __init__(self, pids: str, fail_on_rank: int = -1, **kwargs):
        super().__init__(**kwargs)
        with open(pids, "a") as file:
            file.write(json.dumps(os.getpid()) + "\\n")
        self.fail_on_rank = fail_on_rank

    def training_step(self, batch, batch_idx):
        if self.global_rank == self.fail_on_rank and batch_idx == 1:
            raise RuntimeError(f"rank {self.global_rank} gave up")
        return super().training_step(batch, batch_idx)
'''


def project(folder: Path, sweep: str) -> Path:
    shutil.copy(PROJECT, folder / "tinyproject.py")
    (folder / "ddpextras.py").write_text(EXTRAS)
    (folder / "sweep.yaml").write_text(sweep)
    return folder / "sweep.yaml"


def sweep_text(count: int, budget: str, trainer: str, grid: str = "",
               model_args: str = "") -> str:
    return (
        "name: ddp\n"
        f"model: {{class_path: ddpextras.PidClassifier, init_args: {{hidden: 16, pids: pids.txt"
        f"{model_args}}}}}\n"
        f"data: {{class_path: tinyproject.BlobsData, init_args: {{batch_size: 16, "
        f"count: {count}}}}}\n"
        "quality: {metric: val_acc, mode: max}\n"
        f"train: {budget}\n"
        "energy: {idle_seconds: 0, warmup_steps: 2}\n"
        f"trainer: {trainer}\n{grid}")


def pids(folder: Path) -> list[int]:
    path = folder / "pids.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_two_ranks_train_what_one_device_trains_and_the_node_is_measured_once(
        tmp_path: Path) -> None:
    # Long enough (a few seconds of fit) for CodeCarbon's one-second CPU estimate.
    project(tmp_path, sweep_text(32768, "{epochs: 2}", "{accelerator: cpu}",
                                 "grid: {trainer.devices: [1, 2]}\n"))

    done = greenbench("run", "sweep.yaml", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    records = {r["train"]["world_size"]: r for r in read_records(tmp_path / "runs" / "ddp")
               .values()}
    one, two = records[1], records[2]
    assert one["status"] == two["status"] == "ok"
    assert two["train"]["strategy"] == "auto" and two["train"]["strategy_run"] == "DDPStrategy"
    assert [d["rank"] for d in two["train"]["devices"]] == [0, 1]
    assert one["train"]["strategy_run"] == "SingleDeviceStrategy"
    # Every rank's samples: the same per epoch, each rank having seen half of them.
    per_epoch = [r["train"]["samples_seen"] / 2 for r in (one, two)]
    assert per_epoch[1] == pytest.approx(per_epoch[0], rel=0.05)
    assert two["train"]["batches"] == pytest.approx(one["train"]["batches"] / 2, rel=0.05)
    for record in (one, two):
        windows = record["energy"]["windows"]
        assert windows["warmup"]["samples"] + windows["train"]["samples"] == \
            record["train"]["samples_seen"]
    assert two["energy"]["windows"]["warmup"]["samples"] == 2 * 2 * 16  # 2 batches, 2 ranks
    # The node's CPU and RAM once: one CodeCarbon tracker, in rank 0, so the fit's joules per
    # second are not doubled (each rank running its own tracker would about double them).
    assert two["energy"]["windows"]["fit"]["components"]["cpu"]["joules"] is not None
    kinds = [sorted(p.name.removeprefix(r["run_id"]) for p in
                    (tmp_path / "runs" / "ddp" / "codecarbon").iterdir()
                    if p.name.startswith(r["run_id"])) for r in (one, two)]
    assert kinds[1] == kinds[0] and ".csv" in kinds[0]  # CodeCarbon's files of one tracker
    rates = [r["energy"]["windows"]["fit"]["total_j"] / r["energy"]["windows"]["fit"]["duration_s"]
             for r in (one, two)]
    assert rates[1] < 1.6 * rates[0]
    # Three processes built the model: one for the 1-device point, two ranks for the other.
    assert len(set(pids(tmp_path))) == 3


def test_a_stop_on_one_rank_ends_fit_on_every_rank_at_the_same_batch(tmp_path: Path) -> None:
    project(tmp_path, sweep_text(
        1024, "{steps: 1000}",
        "{accelerator: cpu, devices: 2, strategy: ddp_spawn, callbacks: "
        "{class_path: ddpextras.StopOnRank, init_args: {rank: 1, batches: 3}}}"))

    done = greenbench("run", "sweep.yaml", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    (record,) = read_records(tmp_path / "runs" / "ddp").values()
    assert record["status"] == "ok", record["reason"]
    train = record["train"]
    assert train["strategy"] == "ddp_spawn" and train["strategy_run"] == "DDPStrategy"
    assert train["batches"] == 3 and train["samples_seen"] == 3 * 16 * 2
    assert train["stopped_by"] == "StopOnRank (rank 1)"
    assert train["stopped_at"]["batches"] == 3


def test_a_failing_rank_fails_the_point_with_its_error_and_leaves_no_process(
        tmp_path: Path) -> None:
    project(tmp_path, sweep_text(1024, "{steps: 1000}", "{accelerator: cpu, devices: 2}",
                                 model_args=", fail_on_rank: 1"))

    done = greenbench("run", "sweep.yaml", cwd=tmp_path, timeout=120)

    assert done.returncode == 1
    (record,) = read_records(tmp_path / "runs" / "ddp").values()
    assert record["status"] == "failed"
    assert "rank 1 of 2 failed: RuntimeError: rank 1 gave up" in record["reason"]
    ranks = pids(tmp_path)
    assert len(ranks) == 2 and not any(alive(pid) for pid in ranks)


def test_kill_9_during_a_two_rank_point_leaves_no_rank_and_the_resumed_sweep_trains_it_once(
        tmp_path: Path) -> None:
    project(tmp_path, sweep_text(65536, "{epochs: 1}", "{accelerator: cpu, devices: 2}"))
    sweep = subprocess.Popen([sys.executable, "-m", "greenbench", "run", "sweep.yaml"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(pids(tmp_path)) < 2:  # both ranks have built the model: training is near
            assert time.monotonic() < deadline and sweep.poll() is None, "no ranks started"
            time.sleep(0.1)
        ranks = children_of(sweep.pid)  # rank 0 and rank 1, both gb-point processes
        assert len(ranks) == 2 and set(pids(tmp_path)) == set(ranks)
        sweep.send_signal(signal.SIGKILL)
        sweep.wait(timeout=30)
        time.sleep(5)
        assert not [pid for pid in ranks if alive(pid)]
    finally:
        if sweep.poll() is None:
            sweep.kill()

    resumed = greenbench("run", "sweep.yaml", cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stderr
    (record,) = read_records(tmp_path / "runs" / "ddp").values()
    assert record["status"] == "ok" and record["train"]["world_size"] == 2
    assert len(pids(tmp_path)) == 4  # two ranks killed, two that trained it: once


def test_ctrl_c_during_a_two_rank_point_stops_every_rank(tmp_path: Path) -> None:
    project(tmp_path, sweep_text(65536, "{epochs: 1}", "{accelerator: cpu, devices: 2}"))
    sweep = subprocess.Popen([sys.executable, "-m", "greenbench", "run", "sweep.yaml"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while len(pids(tmp_path)) < 2:
            assert time.monotonic() < deadline and sweep.poll() is None, "no ranks started"
            time.sleep(0.1)
        ranks = children_of(sweep.pid)
        sweep.send_signal(signal.SIGINT)
        _, err = sweep.communicate(timeout=60)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 130, err
    assert "interrupted" in err
    time.sleep(1)
    assert len(ranks) == 2 and not [pid for pid in ranks if alive(pid)]
    assert not (tmp_path / "runs" / "ddp" / "records").exists() or \
        not list((tmp_path / "runs" / "ddp" / "records").iterdir())


# -- functions ------------------------------------------------------------------------------

def test_the_number_of_ranks_is_trainer_devices() -> None:
    assert world_size(None) == 1 and world_size({}) == 1
    assert world_size({"devices": 1}) == 1 and world_size({"devices": 4}) == 4


@pytest.mark.parametrize(("asked", "run"), [
    ("ddp_spawn", "ddp"), ("ddp_fork", "ddp"), ("ddp_notebook", "ddp"),
    ("ddp_spawn_find_unused_parameters_true", "ddp_find_unused_parameters_true"),
    ("ddp", "ddp"), ("fsdp", "fsdp"), ("fsdp_cpu_offload", "fsdp_cpu_offload"),
    ("auto", "auto"), ("deepspeed_stage_2", "deepspeed_stage_2")])
def test_a_spawn_or_fork_strategy_runs_as_its_ddp_form(asked: str, run: str) -> None:
    assert launched_strategy(asked) == run


def test_the_point_trainer_on_two_devices_has_lightnings_own_cluster_environment(
        tmp_path: Path) -> None:
    from lightning.pytorch.plugins.environments import LightningEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    from greenbench.point.trainer import make_trainer

    trainer, _ = make_trainer({"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"},
                              "32-true", 1, own=[], before=[], root_dir=tmp_path, run_id="x",
                              hyperparameters={})
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy._start_method == "popen"  # started by greenbench, not spawned
    assert isinstance(trainer.strategy.cluster_environment, LightningEnvironment)
    assert trainer.num_devices == 2


def spec(trainer: dict | None) -> RunSpec:
    return RunSpec("x", "s", {"trainer": trainer} if trainer is not None else {})


def test_a_point_that_needs_more_gpus_than_the_node_shows_is_refused() -> None:
    check_devices([spec(None), spec({"devices": 2, "accelerator": "cpu"})], gpus=0)
    check_devices([spec({"devices": 2})], gpus=0)  # auto without GPUs: two CPU ranks
    check_devices([spec({"devices": 2, "accelerator": "gpu"})], gpus=2)
    with pytest.raises(UserError, match=r"^trainer.devices: a point asks for 4 GPU\(s\) and "
                                        r"this node shows 2"):
        check_devices([spec({"devices": 4})], gpus=2)
    with pytest.raises(UserError, match="asks for 1 GPU"):
        check_devices([spec({"accelerator": "cuda"})], gpus=0)


@pytest.mark.skipif(visible_gpus() > 0, reason="this node has GPUs")
def test_a_sweep_asking_for_gpus_here_stops_before_anything_is_written(tmp_path: Path) -> None:
    project(tmp_path, sweep_text(64, "{steps: 2}", "{accelerator: gpu}",
                                 "grid: {trainer.devices: [1, 2]}\n"))

    done = cli("run", "sweep.yaml", cwd=tmp_path)

    assert done.returncode == 2
    assert "trainer.devices: a point asks for 1 GPU(s) and this node shows 0" in done.stderr
    assert not (tmp_path / "runs").exists()
