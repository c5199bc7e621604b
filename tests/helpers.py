"""Shared helpers: tiny points and sweeps that train for real on the bundled digits in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from greenbench.sweep import RunSpec, run_id

# Small enough that a point trains in well under a second on a 2-core CPU.
TINY = {
    "dataset": "digits",
    "image_size": 8,
    "width": 0.25,
    "data_fraction": 1.0,
    "seed": 0,
    "repeat": 0,
    "latent_dim": 8,
    "batch_size": 32,
    "epochs": None,
    "steps": 4,
    "eval": {"num_samples": 200, "every_n_epochs": None, "target_kid": None,
             "min_extractor_accuracy": None, "importance_samples": 4},
}


# A short idle baseline and warm-up keep the energy windows of a tiny point non-empty and fast.
TINY_ENERGY = {"idle_seconds": 0.3, "warmup_steps": 2, "sample_hz": 10.0}
WORLD_AVERAGE = {"country_iso_code": None, "intensity_g_per_kwh": None, "pue": 1.0}


def tiny_spec(root: str | None = None, **overrides: Any) -> RunSpec:
    """A resolved run spec for one tiny point; ``overrides`` replace config fields."""
    config = {"model": "gan", "precision": "32-true", "lr": 2e-4, **TINY, **overrides}
    return RunSpec(run_id(config), "test", config, root, TINY_ENERGY, WORLD_AVERAGE)


TINY_SWEEP = """\
name: tiny
dataset: {name: digits, image_size: 8}
train: {steps: 4}
eval: {num_samples: 200, importance_samples: 4}
energy: {idle_seconds: 0.3, warmup_steps: 2}
width: 0.25
latent_dim: 8
batch_size: 32
"""


def write_sweep(folder: Path, extra: str = "", base: str = TINY_SWEEP) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(base + extra)
    return path


def greenbench(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "greenbench", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


def read_records(sweep_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((sweep_dir / "records").iterdir())}
