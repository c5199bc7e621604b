"""``EnergyCallback``: joules per phase of training for any LightningModule.

::

    energy = EnergyCallback()
    Trainer(callbacks=[energy]).fit(model)
    print(energy.result()["windows"]["train"]["total_j"])

A thin Lightning shell over ``EnergyMonitor``. When fit starts it starts the meters (NVML for
the GPU the run uses, named by its UUID, CodeCarbon for CPU and RAM on the node's first process)
and measures an ``idle`` baseline for ``idle_seconds`` (in segments of a second or more, so that
its spread is known: long enough that the GPU energy counter's granularity is under 1 % of each);
then ``warmup`` runs for the first ``warmup_steps`` training batches (batches, not optimizer
steps, so a GAN with two optimizers warms up like a VAE) and ``train`` covers the rest of fit,
validation loops included. Code wrapped in ``eval_window()`` (sample generation, quality
metrics; during or after fit) counts as ``eval`` and pauses whatever it interrupts, and so do
``trainer.validate()``, ``test()`` and ``predict()`` run after fit and before ``result()``.
``result()`` stops the meters and returns the windows.

One callback can measure several fits: each ``fit`` starts a fresh measurement, ``result()``
gives the latest fit's and ``results()`` every fit's, in order.

The device is synchronised only at window edges, never in a per-batch hook: the per-batch work
is counting samples and comparing an integer step count.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.data import extract_batch_size

from greenbench.energy.carbon import CarbonIntensity, resolve_intensity
from greenbench.energy.codecarbon import CodeCarbonMeter
from greenbench.energy.meters import Meter, NotMeasuredHere
from greenbench.energy.monitor import (
    EVAL,
    FIT,
    GENERATE,
    IDLE,
    MIN_WINDOW_PERIODS,
    TOTAL,
    TRAIN,
    WARMUP,
    EnergyMonitor,
)
from greenbench.energy.nvml import NvmlMeter

COOL_ENOUGH_C = 3.0  # a GPU this close to the reference temperature has cooled down
# An idle segment lasts at least this many updates of the slowest energy counter, so that the
# counter's granularity (up to one update's energy at each edge) is under 1 % of its energy.
IDLE_SEGMENT_UPDATES = 100


class EnergyCallback(Callback):
    """Measure energy per phase of fit; see the module docstring.

    Args:
        idle_seconds: length of the idle baseline measured before training (0: none).
        warmup_steps: training batches counted as ``warmup`` rather than ``train``.
        sample_hz: NVML power-sampling rate, used where a GPU has no energy counter.
        carbon: the carbon intensity for grams of CO2 (default: the world average).
        codecarbon_dir: where CodeCarbon writes its CSV (default: a new temporary folder).
        project_name: the project name CodeCarbon writes in its CSV.
        meters: measure with these instead of the default NVML and CodeCarbon meters.
        min_window_periods: a window is ``reliable`` only when it lasts this many periods of
            its slowest meter (CodeCarbon measures every second: 10 s by default).
        cooldown_s: before the idle baseline, wait at most this long for the GPUs to cool to
            within 3 degrees of ``reference_temperature_c`` (default: their temperature when
            the wait begins, so a first run waits for nothing); what was found is recorded.
        reference_temperature_c: the temperature a sweep's first point started at.
        all_ranks: on several devices, measure every rank's GPU on this node from local rank 0
            (summed, each counted once, the other ranks measuring nothing); by default each
            rank measures its own GPU.
        own_pids: the processes of this run (its ranks'); a GPU on which NVML lists compute
            processes other than these is marked ``shared_device``. Default: this process.
        baseline: an idle baseline measured before (a result's ``baseline`` section with the
            ``window`` it describes, as a sweep passes from point to point): used instead of
            measuring one, so no ``idle_seconds`` are spent.
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
        baseline: dict[str, Any] | None = None,
        min_window_periods: float = MIN_WINDOW_PERIODS,
        cooldown_s: float = 0.0,
        reference_temperature_c: float | None = None,
        all_ranks: bool = False,
        own_pids: Sequence[int] | None = None,
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
        self.baseline = baseline
        self.min_window_periods = min_window_periods
        self.cooldown_s = cooldown_s
        self.reference_temperature_c = reference_temperature_c
        self.all_ranks = all_ranks
        self.own_pids = list(own_pids) if own_pids is not None else None
        self._cooldown: dict[str, Any] | None = None
        self._idle_taken_at: datetime | None = None
        self._fit_started_at: datetime | None = None
        self._meters_start_s: float | None = None
        self.monitor: EnergyMonitor | None = None
        self._trainer: Trainer | None = None
        self._device: torch.device | None = None
        self._result: dict[str, Any] | None = None
        self._earlier: list[dict[str, Any]] = []  # results of the fits before the latest
        self._batches = 0  # training batches of the current fit
        self._warned: set[str] = set()

    # -- Lightning hooks -------------------------------------------------------------------

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.monitor is not None:  # an earlier fit: keep its result, start afresh
            self._earlier.append(self.result())
        self._result, self._batches = None, 0
        self._trainer, self._device = trainer, trainer.strategy.root_device
        self.monitor = EnergyMonitor(self._meters or self._default_meters(trainer),
                                     min_window_periods=self.min_window_periods)
        started = time.perf_counter()
        self.monitor.start()
        self._meters_start_s = round(time.perf_counter() - started, 3)
        self._fit_started_at = datetime.now(timezone.utc)
        self._cooldown = self._cool_down() if self.cooldown_s > 0 else None
        if self.idle_seconds > 0 and self.baseline is None:
            self._synchronize()
            self._idle_taken_at = datetime.now(timezone.utc)
            self.monitor.switch(IDLE)
            self._idle()
        self._synchronize()
        self.monitor.switch(WARMUP if self.warmup_steps > 0 else TRAIN)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        self.monitor.count_samples(batch_size_of(batch))
        self._batches += 1
        if self.monitor.phase == WARMUP and self._batches >= self.warmup_steps:
            self._synchronize()
            self.monitor.switch(TRAIN)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """With a logger: the training energy so far, ``energy/fit_j`` and ``energy/fit_net_j``
        against the global step (the meters are read here, at the epoch's edge)."""
        if not trainer.loggers or self.monitor is None or not self.monitor.running:
            return
        self.training_joules()  # reads the meters: the epoch's edge
        fit = self.monitor.result()["windows"][FIT]
        metrics = {f"energy/fit{suffix}_j": fit[key] for suffix, key in (("", "total_j"),
                                                                          ("_net", "net_j"))
                   if fit[key] is not None}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._synchronize()
        self.monitor.switch(None)
        self._log(self.monitor.result()["windows"], (IDLE, WARMUP, TRAIN, FIT))

    # validate(), test() and predict() outside fit: measured as eval while a fit's measurement
    # is open (after fit, before result()); otherwise not measured, and said once.

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outside_fit_starts(trainer, "validate")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outside_fit_ends(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outside_fit_starts(trainer, "test")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outside_fit_ends(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outside_fit_starts(trainer, "predict")

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outside_fit_ends(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if self.monitor is not None:
            self.monitor.stop()

    # -- for the code around fit -----------------------------------------------------------

    def eval_window(self) -> AbstractContextManager[None]:
        """Count the enclosed block as ``eval``, during fit or after it (before ``result()``)."""
        return self._window(EVAL)

    def generate_window(self) -> AbstractContextManager[None]:
        """Count the enclosed block as ``generate``: sampling from the trained model and nothing
        else, after fit and before ``result()`` (the device is synchronised at both edges)."""
        return self._window(GENERATE)

    @contextmanager
    def _window(self, phase: str) -> Iterator[None]:
        if self.monitor is None or not self.monitor.running:
            raise RuntimeError(f"{phase}_window() needs the callback's fit to have started, "
                               "and result() not to have been called yet")
        self._synchronize()
        interrupted = self.monitor.switch(phase)
        try:
            yield
        finally:
            self._synchronize()
            self.monitor.switch(interrupted)

    def result(self) -> dict[str, Any]:
        """Stop the meters; the latest fit's windows, the meters' details and the settings, as
        a plain dict.

        The same dict on every call until the next fit. ``result()["windows"]`` has ``idle``,
        ``warmup``, ``train``, ``eval``, ``fit`` and ``total``.
        """
        if self._result is None:
            if self.monitor is None:
                raise RuntimeError("result() needs a fit to have started with this callback")
            self.monitor.stop()
            self._result = self.monitor.result(baseline=self.baseline)
            self._result["baseline"] = self._baseline_record()
            self._result["meters_start_s"] = self._meters_start_s  # CodeCarbon's start, mostly
            self._result["cooldown"] = self._cooldown
            self._result["settings"] = {
                "idle_seconds": self.idle_seconds,
                "warmup_steps": self.warmup_steps,
                "sample_hz": self.sample_hz,
                "min_window_periods": self.min_window_periods,
                "cooldown_s": self.cooldown_s,
            }
            self._log(self._result["windows"], (EVAL, GENERATE, TOTAL))
        return self._result

    def results(self) -> list[dict[str, Any]]:
        """Every fit's result, the earliest first (the latest stops the meters, as result())."""
        return [*self._earlier, self.result()] if self.monitor is not None else []

    def training_joules(self) -> float | None:
        """Training energy so far: the ``fit`` window, warm-up plus train, up to now (None when
        not measurable). During training the meters are read here, as at a window's edge, so
        that the phase in progress counts too."""
        return self.so_far(FIT)[0]

    def so_far(self, window: str) -> tuple[float | None, float]:
        """A window's joules (None when not measurable) and seconds up to now: the meters are
        read here, as at a window's edge, so that the phase in progress counts too."""
        if self.monitor is None:
            return None, 0.0
        if self.monitor.running and self.monitor.phase is not None:
            self._synchronize()
            self.monitor.switch(self.monitor.phase)
        measured = self.monitor.result()["windows"][window]
        return measured["total_j"], measured["duration_s"]

    def slowest_period_s(self) -> float:
        """The longest period of the meters in use (CodeCarbon's second on a CPU): a window
        is reliable from ``min_window_periods`` of them."""
        periods = self.monitor.periods().values() if self.monitor is not None else ()
        return max((period for _, period in periods), default=0.0)

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
        devices = [trainer.strategy.root_device]
        if self.all_ranks and trainer.local_rank == 0:
            devices = getattr(trainer.strategy, "parallel_devices", None) or devices
        elif self.all_ranks:
            why = "measured by the node's local rank 0, for every rank"
            return [NotMeasuredHere(NvmlMeter.components, why),
                    NotMeasuredHere(CodeCarbonMeter.components, why)]
        meters: list[Meter] = [
            NvmlMeter([nvml_device(device) for device in devices if device.type == "cuda"],
                      self.sample_hz, own_pids=self.own_pids)
        ]
        if trainer.local_rank == 0:  # node-level components: one process per node measures
            meters.append(
                CodeCarbonMeter(self.codecarbon_dir, self.carbon_intensity, self.project_name)
            )
        else:
            why = "node-level: measured by the node's local rank 0"
            meters.append(NotMeasuredHere(CodeCarbonMeter.components, why))
        return meters

    def _baseline_record(self) -> dict[str, Any] | None:
        """Which idle baseline the net figures use: measured in this fit, or given to it."""
        if self.baseline is not None:
            given = self.baseline
            taken = datetime.fromisoformat(given["taken_at"])
            return {"shared": True, "taken_at": given["taken_at"],
                    "taken_by": given.get("taken_by"),
                    "duration_s": given["window"]["duration_s"], "power_w": given["power_w"],
                    "segment_powers_w": given["segment_powers_w"],
                    "age_s": round((self._fit_started_at - taken).total_seconds(), 3)}
        own = self.monitor.baseline()
        if own is None or self._idle_taken_at is None:
            return None
        return {"shared": False, "taken_at": self._idle_taken_at.isoformat(), "taken_by": None,
                "duration_s": own["window"]["duration_s"], "power_w": own["power_w"],
                "segment_powers_w": own["segment_powers_w"], "age_s": 0.0}

    def _cool_down(self, poll_s: float = 0.5) -> dict[str, Any]:
        """Wait (outside every window) for the hottest GPU to come within ``COOL_ENOUGH_C`` of
        the reference temperature, for at most ``cooldown_s``; what was found."""
        readers = [m for m in self.monitor.meters if hasattr(m, "temperatures")]

        def hottest() -> float | None:
            found = [t for m in readers for t in m.temperatures().values() if t is not None]
            return max(found) if found else None

        start = hottest()
        if start is None:
            return {"waited_s": 0.0, "reached": None, "reason": "no GPU temperature to read"}
        reference = self.reference_temperature_c if self.reference_temperature_c is not None \
            else start
        began, now = time.perf_counter(), start
        while now is not None and now > reference + COOL_ENOUGH_C and (
                time.perf_counter() - began < self.cooldown_s):
            time.sleep(poll_s)
            now = hottest()
        return {"waited_s": round(time.perf_counter() - began, 3), "reference_c": reference,
                "start_c": start, "end_c": now,
                "reached": now is not None and now <= reference + COOL_ENOUGH_C}

    def _idle(self) -> None:
        """Sleep through the idle baseline in segments of a second, or of IDLE_SEGMENT_UPDATES
        counter updates where that is longer: their spread tells whether training can be told
        from idle at all, and no segment is mostly the counter's granularity."""
        quanta = [getattr(meter, "counter_period_s", None) for meter in self.monitor.meters]
        segment_s = max([1.0, *(IDLE_SEGMENT_UPDATES * q for q in quanta if q)])
        segments = max(1, int(self.idle_seconds / segment_s + 1e-9))  # each >= segment_s
        for i in range(segments):
            time.sleep(self.idle_seconds / segments)
            if i < segments - 1:
                self.monitor.switch(IDLE)

    def _outside_fit_starts(self, trainer: Trainer, what: str) -> None:
        if trainer.state.fn == "fit":
            return  # validation inside fit belongs to train
        if self.monitor is not None and self.monitor.running:
            self._synchronize()
            self.monitor.switch(EVAL)
        elif what not in self._warned:
            self._warned.add(what)
            rank_zero_warn(f"EnergyCallback: trainer.{what}() is not measured: no fit "
                           "measurement is open (run it after fit and before result())")

    def _outside_fit_ends(self, trainer: Trainer) -> None:
        if trainer.state.fn != "fit" and self.monitor is not None and self.monitor.running:
            self._synchronize()
            self.monitor.switch(None)

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
            logger.save()  # after fit the logger has saved for the last time: save again


def nvml_device(device: torch.device) -> int | str:
    """The GPU a CUDA device is, as ``NvmlMeter`` takes it: its UUID, which names it whatever the
    device order; its index where torch gives no UUID (``NvmlMeter`` then records the
    ``CUDA_DEVICE_ORDER`` the index was read in)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid or "")
    except Exception:  # an older torch, or a device that cannot say
        uuid = ""
    return uuid or index


def batch_size_of(batch: Any) -> int:
    """How many samples ``batch`` holds, as Lightning counts them; 0 when it cannot tell."""
    try:
        return extract_batch_size(batch)
    except Exception:  # a batch we cannot size counts as no samples
        return 0
