"""What EnergyCallback costs a training step: A/B alternated in one run, median ratio.

Each round trains the reference GAN on digits three times with the same seed and data: without
the callback (A), with it (B), and without it again (C, a control), in an order that rotates
from round to round (ABC, BCA, CAB, ...). A small timing callback takes the median step time
after a warm-up. The callback's idle baseline is set to 0: it is measured before training and
is not step time. Per round, the overhead ratio is B over the mean of A and C, and the control
ratio C over A shows how much two identical arms differ on this machine (the noise floor). The
report gives the median and spread of both over the rounds, against the target median <= 1.01
on a CPU.

    python benchmarks/overhead.py            # writes reports/energy-callback-overhead.{md,json}
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from greenbench import environment
from greenbench.data import load_dataset
from greenbench.energy.callback import EnergyCallback
from greenbench.models import build_model

# -- settings -----------------------------------------------------------------------------
ROUNDS = 30
BATCHES = 70  # per arm; short arms, many rounds: this machine's speed drifts over seconds
TIMED_FROM = 20  # batches before this one are warm-up, not timed
MODEL, WIDTH, IMAGE_SIZE, BATCH_SIZE, PRECISION = "gan", 1.0, 16, 64, "32-true"
TARGET = 1.01
ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "energy-callback-overhead"


class StepTimer(L.Callback):
    """The median time from one training batch's start to the next's, after the warm-up.

    A whole step cycle: forward, backward, optimizer, and every callback hook in between. The
    median, not the mean, so that a moment of preemption on a shared machine does not decide.
    """

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx >= TIMED_FROM:
            self.starts.append(time.perf_counter())

    @property
    def seconds_per_step(self) -> float:
        return statistics.median(b - a for a, b in itertools.pairwise(self.starts))


def seconds_per_step(images: torch.Tensor, with_callback: bool) -> float:
    L.seed_everything(0, verbose=False)
    model = build_model(MODEL, image_size=IMAGE_SIZE, channels=1, width=WIDTH, latent_dim=32,
                        lr=2e-4)
    data = DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=BATCH_SIZE,
                      shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0))
    timer = StepTimer()
    callbacks = [timer] + ([EnergyCallback(idle_seconds=0)] if with_callback else [])
    trainer = L.Trainer(
        accelerator="cpu", precision=PRECISION, max_epochs=-1, max_steps=-1,
        limit_train_batches=BATCHES, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit_loop.max_epochs = 1
    trainer.fit(model, data)
    if with_callback:
        callbacks[1].result()  # stop the meters before the next arm
    return timer.seconds_per_step


def main() -> int:
    warnings.filterwarnings("ignore")
    train = load_dataset("digits", None, IMAGE_SIZE).train_images
    images = train.repeat(((BATCHES + 1) * BATCH_SIZE) // len(train) + 1, 1, 1, 1)
    seconds_per_step(images, with_callback=False)  # warm the process up; not counted

    rounds = []
    arms = ("A", "B", "C")
    for i in range(ROUNDS):
        order = arms[i % 3:] + arms[:i % 3]
        timed = {arm: seconds_per_step(images, with_callback=arm == "B") for arm in order}
        rounds.append({
            "order": "".join(order), "a_s": timed["A"], "b_s": timed["B"], "c_s": timed["C"],
            "ratio": timed["B"] / ((timed["A"] + timed["C"]) / 2),
            "control_ratio": timed["C"] / timed["A"],
        })
        print(f"round {i + 1:2d}/{ROUNDS} ({rounds[-1]['order']}): ratio "
              f"{rounds[-1]['ratio']:.4f}, control {rounds[-1]['control_ratio']:.4f}", flush=True)

    ratio = _spread([r["ratio"] for r in rounds])
    control = _spread([r["control_ratio"] for r in rounds])
    median = ratio["median"]
    env = environment.describe()
    summary = {
        "benchmark": "EnergyCallback overhead on training step time",
        "setup": {"model": MODEL, "width": WIDTH, "image_size": IMAGE_SIZE,
                  "batch_size": BATCH_SIZE, "precision": PRECISION, "rounds": ROUNDS,
                  "batches_per_arm": BATCHES, "timed_from_batch": TIMED_FROM},
        "ratio": ratio, "control_ratio": control,
        "target_median_ratio": TARGET, "met": median <= TARGET,
        "rounds": rounds,
        "machine": {"cpu": env["cpu"], "cpu_count": os.cpu_count(),
                    "platform": platform.platform(), "accelerator": "cpu"},
        "versions": {k: env[k] for k in ("python", "torch", "lightning", "greenbench")},
        "commit": env["git_sha"], "uncommitted_changes": env["git_dirty"],
    }
    REPORT.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    per_step = statistics.median(r["a_s"] for r in rounds) * 1e3
    REPORT.with_suffix(".md").write_text("\n".join([
        "# EnergyCallback overhead",
        "",
        f"Training step time with the callback over without it, {ROUNDS} rounds alternated "
        f"in one run: **median ratio {median:.4f}** (target <= {TARGET}: "
        f"{'met' if median <= TARGET else 'NOT met'}).",
        "",
        "| | median | interquartile range | min | max |",
        "|---|---:|---|---:|---:|",
        f"| with / without the callback | {_row(ratio)} |",
        f"| control: without / without | {_row(control)} |",
        "",
        "The control row is the noise floor: two identical arms differ by that much here.",
        "",
        f"Setup: {MODEL} width {WIDTH:g} on {IMAGE_SIZE}x{IMAGE_SIZE} digits, batch "
        f"{BATCH_SIZE}, {PRECISION}; {BATCHES} batches per arm, the first {TIMED_FROM} untimed; "
        f"a step takes {per_step:.1f} ms without the callback (median). The callback ran with "
        "its default meters: CodeCarbon for CPU and RAM (its sampling thread included), NVML "
        "unavailable (no GPU).",
        "",
        f"Machine: {env['cpu']}, {os.cpu_count()} cores, CPU only; Python {env['python']}, "
        f"torch {env['torch']}, lightning {env['lightning']}; commit {env['git_sha']}"
        f"{' with uncommitted changes' if env['git_dirty'] else ''}. "
        "Per-round figures: `energy-callback-overhead.json`.",
        "",
    ]))
    print(f"median ratio {median:.4f}; wrote {REPORT.relative_to(ROOT)}.md and .json")
    return 0


def _spread(values: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return {"median": median, "q1": q1, "q3": q3,
            "min": min(values), "max": max(values)}


def _row(spread: dict[str, float]) -> str:
    return (f"{spread['median']:.4f} | {spread['q1']:.4f} to {spread['q3']:.4f} | "
            f"{spread['min']:.4f} | {spread['max']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
