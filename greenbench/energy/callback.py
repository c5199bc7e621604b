"""``EnergyCallback``: joules per phase of training for any LightningModule.

::

    energy = EnergyCallback()
    Trainer(callbacks=[energy]).fit(model)
    print(energy.result()["windows"]["train"]["total_j"])

A thin Lightning shell over ``EnergyMonitor``. When fit starts it starts the meters (NVML for
the GPU the run uses, CodeCarbon for CPU and RAM on the node's first process) and measures an
``idle`` baseline for ``idle_seconds``; then ``warmup`` runs until ``warmup_steps`` optimizer
steps are done and ``train`` covers the rest of fit, validation loops included. Code wrapped in
``eval_window()`` (sample generation, quality metrics; during or after fit) counts as ``eval``
and pauses whatever it interrupts. ``result()`` stops the meters and returns the windows.

The device is synchronised only at window edges, never in a per-batch hook: the per-batch work
is counting samples and comparing an integer step count.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.data import extract_batch_size

from greenbench.energy.carbon import CarbonIntensity, resolve_intensity
from greenbench.energy.codecarbon import CodeCarbonMeter
from greenbench.energy.meters import Meter, NotMeasuredHere
from greenbench.energy.monitor import EVAL, IDLE, TOTAL, TRAIN, WARMUP, EnergyMonitor
from greenbench.energy.nvml import NvmlMeter


class EnergyCallback(Callback):
    """Measure energy per phase of fit; see the module docstring.

    Args:
        idle_seconds: length of the idle baseline measured before training (0: none).
        warmup_steps: optimizer steps counted as ``warmup`` rather than ``train``.
        sample_hz: NVML power-sampling rate, used where a GPU has no energy counter.
        carbon: the carbon intensity for grams of CO2 (default: the world average).
        codecarbon_dir: where CodeCarbon writes its CSV (default: a new temporary folder).
        project_name: the project name CodeCarbon writes in its CSV.
        meters: measure with these instead of the default NVML and CodeCarbon meters.
    """

    def __init__(
        self,
        idle_seconds: float = 5.0,
        warmup_steps: int = 10,
        sample_hz: float = 10.0,
        carbon: CarbonIntensity | None = None,
        codecarbon_dir: str | Path | None = None,
        project_name: str = "greenbench",
        meters: Sequence[Meter] | None = None,
    ):
        if idle_seconds < 0 or warmup_steps < 0 or sample_hz <= 0:
            raise ValueError("idle_seconds and warmup_steps must be >= 0, sample_hz > 0")
        self.idle_seconds = idle_seconds
        self.warmup_steps = warmup_steps
        self.sample_hz = sample_hz
        self.carbon_intensity = carbon or resolve_intensity()
        self.codecarbon_dir = Path(codecarbon_dir or tempfile.mkdtemp(prefix="greenbench-cc-"))
        self.project_name = project_name
        self._meters = list(meters) if meters is not None else None
        self.monitor: EnergyMonitor | None = None
        self._trainer: Trainer | None = None
        self._device: torch.device | None = None
        self._result: dict[str, Any] | None = None

    # -- Lightning hooks -------------------------------------------------------------------

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._trainer, self._device = trainer, trainer.strategy.root_device
        self.monitor = EnergyMonitor(self._meters or self._default_meters(trainer))
        self.monitor.start()
        if self.idle_seconds > 0:
            self._synchronize()
            self.monitor.switch(IDLE)
            time.sleep(self.idle_seconds)
        self._synchronize()
        self.monitor.switch(WARMUP if self.warmup_steps > 0 else TRAIN)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        self.monitor.count_samples(_batch_size(batch))
        if self.monitor.phase == WARMUP and trainer.global_step >= self.warmup_steps:
            self._synchronize()
            self.monitor.switch(TRAIN)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._synchronize()
        self.monitor.switch(None)
        self._log(self.monitor.result()["windows"], (IDLE, WARMUP, TRAIN))

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if self.monitor is not None:
            self.monitor.stop()

    # -- for the code around fit -----------------------------------------------------------

    @contextmanager
    def eval_window(self) -> Iterator[None]:
        """Count the enclosed block as ``eval``, during fit or after it (before ``result()``)."""
        if self.monitor is None or not self.monitor.running:
            raise RuntimeError("eval_window() needs the callback's fit to have started, "
                               "and result() not to have been called yet")
        self._synchronize()
        interrupted = self.monitor.switch(EVAL)
        try:
            yield
        finally:
            self._synchronize()
            self.monitor.switch(interrupted)

    def result(self) -> dict[str, Any]:
        """Stop the meters; the windows, the meters' details and the settings, as a plain dict.

        The same dict on every call. ``result()["windows"]`` has ``idle``, ``warmup``,
        ``train``, ``eval`` and ``total``.
        """
        if self._result is None:
            if self.monitor is None:
                raise RuntimeError("result() needs a fit to have started with this callback")
            self.monitor.stop()
            self._result = self.monitor.result()
            self._result["settings"] = {
                "idle_seconds": self.idle_seconds,
                "warmup_steps": self.warmup_steps,
                "sample_hz": self.sample_hz,
            }
            self._log(self._result["windows"], (EVAL, TOTAL))
        return self._result

    def training_joules(self) -> float | None:
        """Joules of ``warmup`` and ``train`` so far (None when not measurable)."""
        if self.monitor is None:
            return None
        windows = self.monitor.result()["windows"]
        parts = [windows[WARMUP]["total_j"], windows[TRAIN]["total_j"]]
        return None if None in parts else sum(parts)

    def carbon(self) -> dict[str, Any]:
        """kWh and grams of CO2 of the ``total`` window, with the intensity used."""
        return self.carbon_intensity.footprint(self.result()["windows"][TOTAL]["total_j"])

    def codecarbon_csv_files(self) -> dict[str, Path]:
        """CodeCarbon's own CSV files for this run (after ``result()``), by kind."""
        return {
            kind: path
            for meter in (self.monitor.meters if self.monitor else [])
            if isinstance(meter, CodeCarbonMeter)
            for kind, path in meter.csv_files().items()
        }

    # -- internals ---------------------------------------------------------------------------

    def _default_meters(self, trainer: Trainer) -> list[Meter]:
        device = trainer.strategy.root_device
        meters: list[Meter] = [
            NvmlMeter([device.index or 0] if device.type == "cuda" else [], self.sample_hz)
        ]
        if trainer.local_rank == 0:  # node-level components: one process per node measures
            meters.append(
                CodeCarbonMeter(self.codecarbon_dir, self.carbon_intensity, self.project_name)
            )
        else:
            why = "node-level: measured by the node's local rank 0"
            meters.append(NotMeasuredHere(CodeCarbonMeter.components, why))
        return meters

    def _synchronize(self) -> None:
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def _log(self, windows: dict[str, Any], names: Sequence[str]) -> None:
        if self._trainer is None or not self._trainer.loggers:
            return
        metrics = {
            f"energy/{name}_j": windows[name]["total_j"]
            for name in names
            if windows[name]["total_j"] is not None
        }
        for logger in self._trainer.loggers:
            logger.log_metrics(metrics, step=self._trainer.global_step)


def _batch_size(batch: Any) -> int:
    try:
        return extract_batch_size(batch)
    except Exception:  # a batch we cannot size counts as no samples
        return 0
