"""The ``callback_overhead`` section: what ``EnergyCallback`` (NVML and CodeCarbon) adds to a
training step on the GPU, by the A/B/C method of ``benchmarks/overhead.py``
(``benchmarks/ab_rounds.py``): the median ratio over the rounds that fit in the section's time.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import warnings
from typing import Any

from benchmarks.ab_rounds import alternate, spread, spread_row
from benchmarks.gpu.common import Context, num

MODEL, WIDTH, PRECISION = "gan", 1.0, "32-true"
IMAGE_SIZE, BATCH_SIZE = 32, 128  # the precision sweep's
BATCHES, TIMED_FROM = 300, 50  # per arm; batches before TIMED_FROM are warm-up
MIN_ROUNDS = 3
TARGET = 1.01  # the target overhead.py holds a CPU to


def check(ctx: Context) -> dict[str, Any]:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from greenbench.data import load_dataset
    from greenbench.energy.callback import EnergyCallback
    from greenbench.models import build_model

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    deadline = time.perf_counter() + ctx.time_limit_s
    train = load_dataset("digits", None, IMAGE_SIZE).train_images
    images = train.repeat(BATCHES * BATCH_SIZE // len(train) + 1, 1, 1, 1)
    device = torch.device("cuda", 0)

    class StepTimer(L.Callback):
        """Seconds per step from batch TIMED_FROM to the last, the device synchronised at those
        two edges only: on a GPU the host runs ahead, so per-step host times would measure the
        launch queue rather than the steps."""

        def __init__(self) -> None:
            self.began = self.ended = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == TIMED_FROM:
                torch.cuda.synchronize(device)
                self.began = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == BATCHES - 1:
                torch.cuda.synchronize(device)
                self.ended = time.perf_counter()

    def seconds_per_step(with_callback: bool) -> float:
        L.seed_everything(0, verbose=False)
        model = build_model(MODEL, image_size=IMAGE_SIZE, channels=1, width=WIDTH, latent_dim=32,
                            lr=2e-4)
        data = DataLoader(TensorDataset(images, torch.zeros(len(images))),
                          batch_size=BATCH_SIZE, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(0))
        timer = StepTimer()
        with tempfile.TemporaryDirectory(prefix="greenbench-gv-cc-") as codecarbon_dir:
            energy = [EnergyCallback(idle_seconds=0, codecarbon_dir=codecarbon_dir)] \
                if with_callback else []
            trainer = L.Trainer(
                accelerator="gpu", devices=[0], precision=PRECISION, max_epochs=1,
                limit_train_batches=BATCHES, callbacks=[timer, *energy], logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False,
            )
            trainer.fit(model, data)
            if energy:
                energy[0].result()  # stop the meters before the next arm
        if not timer.ended > timer.began > 0:
            raise RuntimeError(f"an arm ran fewer than {BATCHES} batches")
        return (timer.ended - timer.began) / (BATCHES - TIMED_FROM)

    def progress(i: int, row: dict) -> None:
        print(f"  overhead round {i + 1}: ratio {row['ratio']:.4f}, "
              f"control {row['control_ratio']:.4f}", flush=True)

    seconds_per_step(with_callback=True)  # warm the process, CUDA and the meters up; not counted
    rounds = alternate(seconds_per_step, ctx.settings.overhead_rounds, deadline=deadline,
                       min_rounds=MIN_ROUNDS, on_round=progress)
    ratio = spread([r["ratio"] for r in rounds])
    return {
        "rounds": len(rounds), "rounds_planned": ctx.settings.overhead_rounds,
        "ratio": ratio, "control_ratio": spread([r["control_ratio"] for r in rounds]),
        "step_ms": round(1e3 * statistics.median(r["a_s"] for r in rounds), 3),
        "target": TARGET, "met": ratio["median"] <= TARGET,
        "model": MODEL, "width": WIDTH, "image_size": IMAGE_SIZE, "batch_size": BATCH_SIZE,
        "precision": PRECISION, "batches": BATCHES, "timed_from": TIMED_FROM,
    }


def render(entry: dict[str, Any]) -> list[str]:
    ratio, control = entry["ratio"], entry["control_ratio"]
    return [
        f"Training step time with `EnergyCallback` (NVML and CodeCarbon, no idle baseline) "
        f"over without it, {num(entry['rounds'], 0)} rounds (of "
        f"{num(entry['rounds_planned'], 0)} planned) alternated in one run: **median ratio "
        f"{num(ratio['median'], 4)}** (target <= {num(entry['target'], 2)}: "
        f"{'met' if entry['met'] else 'NOT met'}).",
        "",
        "| | median | interquartile range | min | max |",
        "|---|---:|---|---:|---:|",
        f"| with / without the callback | {spread_row(ratio)} |",
        f"| control: without / without | {spread_row(control)} |",
        "",
        f"Setup: {entry['model']} width {num(entry['width'], 1)}, image size "
        f"{num(entry['image_size'], 0)}, batch {num(entry['batch_size'], 0)}, "
        f"{entry['precision']}; {num(entry['batches'], 0)} batches per arm, the first "
        f"{num(entry['timed_from'], 0)} untimed, the device synchronised at the two edges of "
        f"the timed span only. A step takes {num(entry['step_ms'], 3)} ms without the callback "
        "(median over the rounds).",
    ]
