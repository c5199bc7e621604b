"""Nothing from the environment changes a measurement, and a full disk loses nothing finished.

CodeCarbon reads ``CODECARBON_*`` variables and ``.codecarbon.config`` files behind its caller's
back, and Lightning applies ``PL_TRAINER_*`` variables as Trainer defaults: under all of them a
point must train and measure exactly what it does in a clean environment, and its record must
name what was ignored.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from greenbench.sweep.executors.local import last_meaningful_line
from tests.helpers import read_records, write_sweep

ONE_EPOCH = "train: {epochs: 1}\n"  # a step budget would hide a PL_TRAINER batch limit


def run_sweep_in(folder: Path, env: dict[str, str]) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    write_sweep(folder, base=_without_train_budget())
    done = subprocess.run([sys.executable, "-m", "greenbench", "run", "sweep.yaml"], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (record,) = read_records(folder / "runs" / "tiny").values()
    return record


def _without_train_budget() -> str:
    from tests.helpers import TINY_SWEEP

    return TINY_SWEEP.replace("train: {steps: 4}\n", ONE_EPOCH)


def watts(record: dict, component: str) -> float:
    train = record["energy"]["windows"]["fit"]
    return train["components"][component]["joules"] / train["duration_s"]


def test_codecarbon_and_lightning_settings_around_a_point_change_nothing(tmp_path: Path) -> None:
    clean_env = {k: v for k, v in os.environ.items()
                 if not k.upper().startswith(("CODECARBON_", "PL_"))}
    clean = run_sweep_in(tmp_path / "clean", clean_env)

    home = tmp_path / "home"
    home.mkdir()
    (home / ".codecarbon.config").write_text("[codecarbon]\nforce_ram_power = 777\n"
                                             "force_cpu_power = 900\n")
    hostile_dir = tmp_path / "hostile"
    hostile_dir.mkdir()
    (hostile_dir / ".codecarbon.config").write_text("[codecarbon]\nforce_ram_power = 777\n")
    hostile = run_sweep_in(hostile_dir, {
        **clean_env, "HOME": str(home), "CODECARBON_FORCE_CPU_POWER": "5000",
        "CODECARBON_FORCE_RAM_POWER": "5000", "PL_TRAINER_LIMIT_TRAIN_BATCHES": "0.1",
    })

    assert hostile["run_id"] == clean["run_id"]
    assert hostile["train"]["batches"] == clean["train"]["batches"] == 1437 // 32
    assert hostile["train"]["samples_seen"] == clean["train"]["samples_seen"]
    for component in ("cpu", "ram"):  # 5,000 W or 777 W would be two orders of magnitude off
        ratio = watts(hostile, component) / watts(clean, component)
        assert 0.5 < ratio < 2.0, (component, watts(hostile, component), watts(clean, component))
    assert hostile["environment"]["ignored_variables"] == ["PL_TRAINER_LIMIT_TRAIN_BATCHES"]
    assert clean["environment"]["ignored_variables"] == []
    ignored = hostile["energy"]["meters"]["CodeCarbonMeter"]["ignored_config"]
    assert str(home / ".codecarbon.config") in ignored
    assert str(hostile_dir / ".codecarbon.config") in ignored
    assert {"CODECARBON_FORCE_CPU_POWER", "CODECARBON_FORCE_RAM_POWER"} <= set(ignored)


def test_a_dead_point_is_described_by_its_last_meaningful_line() -> None:
    output = ("greenbench: point abc (gan) of sweep tiny\nGPU available: False, used: False\n"
              "RuntimeError: CUDA out of memory\n"
              "💡 Tip: For seamless cloud logging and experiment tracking, try installing "
              "litlogger\n\n")
    assert last_meaningful_line(output) == "RuntimeError: CUDA out of memory"
    assert last_meaningful_line("greenbench: point abc (gan) of sweep tiny\n") is None
