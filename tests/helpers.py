"""Shared helpers: tiny points and sweeps that train for real on the bundled digits in seconds,
hand-written records, tiny dataset files, and the processes a test started. Test modules import
from here, never from each other."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from greenbench.cli import main
from greenbench.point.child import PROCESS_NAME
from greenbench.records import SCHEMA, RunSpec, run_id

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
    "eval": {"num_samples": 50, "every_n_epochs": None, "target_kid": None,
             "min_extractor_accuracy": None, "importance_samples": 4},
}


# A short idle baseline and warm-up keep the energy windows of a tiny point non-empty and fast.
TINY_ENERGY = {"idle_seconds": 0.3, "warmup_steps": 2, "sample_hz": 10.0}
WORLD_AVERAGE = {"country_iso_code": None, "intensity_g_per_kwh": None, "pue": 1.0}
TINY_GENERATE = {"num_images": 64, "batch_size": 32}  # two batches: the window, not its length


def tiny_spec(root: str | None = None, **overrides: Any) -> RunSpec:
    """A resolved run spec for one tiny point; ``overrides`` replace config fields."""
    config = {"model": "gan", "precision": "32-true", "lr": 2e-4, **TINY, **overrides}
    return RunSpec(run_id(config), "test", config, root, TINY_ENERGY, WORLD_AVERAGE,
                   TINY_GENERATE)


TINY_SWEEP = """\
name: tiny
dataset: {name: digits, image_size: 8}
train: {steps: 4}
eval: {num_samples: 50, importance_samples: 4}
energy: {idle_seconds: 0.3, warmup_steps: 2}
generate: {num_images: 64, batch_size: 32}
width: 0.25
latent_dim: 8
batch_size: 32
"""


# The smallest real point there is: the reference GAN at 8 pixels and a quarter width, two
# training batches, no idle baseline, ten samples scored and none generated. For what a test asks
# of a point's process (start, stop, kill, resume), not of its numbers. A sweep of the reference
# models is also the quickest to start: checking a user's classes imports Lightning in the
# parent, which costs seconds per `greenbench run`.
SMALLEST_SWEEP = """\
name: tiny
dataset: {name: digits, image_size: 8}
train: {steps: 2}
eval: {num_samples: 10, importance_samples: 1}
energy: {idle_seconds: 0, warmup_steps: 1}
generate: {num_images: 0}
width: 0.25
latent_dim: 8
batch_size: 32
"""


def write_smallest_sweep(folder: Path, extra: str = "", steps: int = 2) -> Path:
    """``SMALLEST_SWEEP`` of ``steps`` training batches plus ``extra`` as
    ``folder/sweep.yaml``."""
    return write_sweep(folder, extra,
                       base=SMALLEST_SWEEP.replace("{steps: 2}", f"{{steps: {steps}}}"))


# The smallest point of a user's own classes (tests/plugins/tinyproject.py): a tiny classifier
# on 64 points, two training batches, no idle baseline, nothing to score or sample.
PROJECT = Path(__file__).parent / "plugins" / "tinyproject.py"
CLASS_SWEEP = """\
name: tiny
model: {class_path: tinyproject.BlobsClassifier, init_args: {hidden: 8}}
data: {class_path: tinyproject.BlobsData, init_args: {batch_size: 16, count: 64}}
quality: {metric: val_acc, mode: max}
train: {steps: 2}
energy: {idle_seconds: 0, warmup_steps: 1}
"""


def write_class_sweep(folder: Path, extra: str = "") -> Path:
    """``CLASS_SWEEP`` plus ``extra`` as ``folder/sweep.yaml``, its project beside it."""
    shutil.copy(PROJECT, folder / "tinyproject.py")
    return write_sweep(folder, extra, base=CLASS_SWEEP)


def class_spec(folder: Path, **overrides: Any) -> RunSpec:
    """The one point of ``CLASS_SWEEP`` as a run spec (its project copied into ``folder``),
    ``overrides`` replacing config fields."""
    from greenbench.sweep.schema import expand, load_sweep

    (spec,) = expand(load_sweep(write_class_sweep(folder)))
    config = {**spec.config, **overrides}
    return RunSpec(run_id(config), spec.sweep, config, None, spec.energy, spec.carbon,
                   spec.generate, import_path=spec.import_path)


def write_sweep(folder: Path, extra: str = "", base: str = TINY_SWEEP) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(base + extra)
    return path


def greenbench(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh process: for what only a process shows (the
    console script, signals, a point's process tree). Everything else calls ``cli``."""
    return subprocess.run(
        [sys.executable, "-m", "greenbench", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command line's ``main`` in this process, run from ``cwd``: its exit code and what it
    printed, as ``greenbench`` gives them, in a fraction of the time."""
    out, err = io.StringIO(), io.StringIO()
    previous_dir, previous_sigterm = os.getcwd(), signal.getsignal(signal.SIGTERM)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(previous_dir)
        signal.signal(signal.SIGTERM, previous_sigterm)
    return subprocess.CompletedProcess(["greenbench", *args], code, out.getvalue(),
                                       err.getvalue())


def read_records(sweep_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((sweep_dir / "records").iterdir())}


# --------------------------------------------------------------------------- records


def record(run_id: str, model: str = "gan", precision: str = "32-true", width: float = 1.0,
           seed: int = 0, status: str = "ok", fit_j: float | None = 100.0,
           kid: float | None = 0.5, measured: bool = False, extractor: str = "digits-16px-r1-a",
           reason: str | None = None, flops: int | None = None,
           node_concurrency: int | None = 1, config: dict | None = None,
           quality: dict | None = None, curve: list[dict] | None = None) -> dict:
    """A record of the current schema, with only what the readers read filled in. ``fit_j``
    is the training energy (the ``fit`` window), a tenth of it spent in warm-up and the rest
    in the ``train`` window (the steady state). ``config`` adds or replaces config fields (a
    user's class: ``model_init_args``, ``quality``, ...); ``quality`` adds or replaces keys of
    an ok run's quality section (``final`` merged into its final scores); ``curve`` is its
    ``quality_curve``."""
    ok = status == "ok"
    source = "nvml_energy_counter" if measured else "codecarbon_cpu_load_estimate"
    warmup_j = None if fit_j is None else fit_j / 10
    train_j = None if fit_j is None else fit_j - warmup_j

    def window(joules: float | None, duration_s: float, samples: int | None) -> dict:
        return {"total_j": joules, "net_j": None, "duration_s": duration_s, "samples": samples,
                "j_per_1k_samples": None, "measured": measured, "valid": True,
                "components": {"gpu": {"joules": None, "source": "unavailable"},
                               "cpu": {"joules": joules, "source": source}}}

    windows = {"warmup": window(warmup_j, 1.0, 64), "train": window(train_j, 9.0, 576),
               "fit": window(fit_j, 10.0, 640), "total": window(fit_j, 10.0, 640)}
    content = {
        "schema": SCHEMA, "run_id": run_id, "status": status, "reason": reason, "sweep": "s",
        "config": {"model": model, "dataset": "digits", "image_size": 16,
                   "precision": precision, "width": width, "data_fraction": 1.0,
                   "seed": seed, "repeat": 0, "latent_dim": 32, "batch_size": 64,
                   "epochs": 5, "steps": None, "lr": 2e-4},
        "energy": {"windows": windows} if ok else None,
        "quality": {"final": {"kid": kid}, "extractor": {"id": extractor}} if ok else None,
        "flops_per_step": flops if ok else None,
        "executor": "local" if node_concurrency == 1 else "ray", "node": "host",
        "node_concurrency": node_concurrency,
    }
    content["config"].update(config or {})
    if quality and ok:
        final = {**content["quality"]["final"], **quality.get("final", {})}
        content["quality"].update({**quality, "final": final})
    if curve is not None:
        content["quality_curve"] = curve
    return content


# --------------------------------------------------------------------------- IDX files

IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TRAIN_COUNT = 20
TEST_COUNT = 10


def idx_bytes(data: np.ndarray, magic: bytes | None = None) -> bytes:
    """Encode a uint8 array as an IDX file: magic, big-endian uint32 dims, then the data."""
    header = magic if magic is not None else bytes([0, 0, 0x08, data.ndim])
    dims = struct.pack(f">{data.ndim}I", *data.shape)
    return header + dims + np.ascontiguousarray(data, dtype=np.uint8).tobytes()


def make_idx_arrays(seed: int) -> dict[str, np.ndarray]:
    """Known pixels and labels for a tiny 20 train / 10 test set; pixels include 0 and 255."""
    rng = np.random.default_rng(seed)
    train_images = rng.integers(0, 256, size=(TRAIN_COUNT, 28, 28), dtype=np.uint8)
    test_images = rng.integers(0, 256, size=(TEST_COUNT, 28, 28), dtype=np.uint8)
    train_images[0, 0, 0], train_images[0, 0, 1] = 0, 255
    return {
        "train-images-idx3-ubyte": train_images,
        "train-labels-idx1-ubyte": (np.arange(TRAIN_COUNT) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": test_images,
        "t10k-labels-idx1-ubyte": (np.arange(TEST_COUNT)[::-1] % 10).astype(np.uint8),
    }


def write_idx_dataset(root: Path, name: str, gzipped: bool = False) -> dict[str, np.ndarray]:
    """Write the tiny IDX set in torchvision's layout under root; return the arrays written."""
    arrays = make_idx_arrays(seed=len(name))
    raw_dir = root / IDX_FOLDERS[name] / "raw"
    raw_dir.mkdir(parents=True)
    for file_name, data in arrays.items():
        if gzipped:
            (raw_dir / f"{file_name}.gz").write_bytes(gzip.compress(idx_bytes(data)))
        else:
            (raw_dir / file_name).write_bytes(idx_bytes(data))
    return arrays


# --------------------------------------------------------------------------- processes

POINT_PROCESS_NAME = PROCESS_NAME.decode()


def children_of(pid: int) -> list[int]:
    """The point processes that ``pid`` started, directly (a cold start) or through its fork
    server (a warm start): its descendants named ``gb-point``; never another run's."""
    found = []
    for child in sorted(descendants(pid)):
        try:
            name = Path(f"/proc/{child}/comm").read_text().strip()
        except OSError:
            continue
        if name == POINT_PROCESS_NAME:
            found.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` in the process tree (children, their children, ...)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found
