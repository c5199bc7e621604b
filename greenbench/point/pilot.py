"""A pilot: a point with a small budget, measured finely enough to predict the whole point.

``greenbench plan`` runs one pilot per configuration through the same point code as a sweep;
``PilotProbe`` is the only addition, a callback that ends fit once the pilot has measured enough
and keeps what a prediction needs (``summary()``, the pilot record's ``pilot``):

* warm-up is the point's own (``energy.warmup_steps`` batches, the sanity validation included),
  read from the record's ``warmup`` window;
* after it, ``segments``: the steady training state cut into stretches at batch ends, each with
  its batches, joules and seconds (the meters read at each edge); their spread gives the
  prediction's interval;
* every validation, in fit or after it, with its joules and seconds, apart from the segments;
* the data's shape as this Trainer sees it: training batches per epoch, and how often it
  validates (``val_check_batch``, ``check_val_every_n_epoch``).

The pilot ends after ``batches`` measured training batches, or, when that is None, once the
steady state has lasted ``min_window_periods`` periods of the slowest meter (the length at
which a window is reliable) in at least ``segments`` stretches. The point's own budget ends it
sooner where it is shorter.
"""

from __future__ import annotations

import math
import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from greenbench.energy.callback import EnergyCallback
from greenbench.energy.monitor import EVAL, FIT

SEGMENTS = 5  # stretches of the steady state: enough for a spread, each long enough to measure


class PilotProbe(Callback):
    def __init__(self, energy: EnergyCallback, batches: int | None = None,
                 segments: int = SEGMENTS):
        self.energy = energy
        self.batches = batches  # measured training batches after warm-up; None: long enough
        self.segments_wanted = segments
        self.segments: list[dict[str, float]] = []
        self.validations: list[dict[str, Any]] = []
        self.shape: dict[str, Any] = {}
        self._seen = 0  # training batches of the fit
        self._measured = 0  # of them after warm-up
        self._edge: tuple[int, float, float] | None = None  # (measured, joules, seconds)
        self._validation_start: tuple[str, float, float] | None = None
        self._wanted_s = math.inf

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.shape = {
            "batches_per_epoch": _whole(trainer.num_training_batches),
            "val_check_batch": _whole(trainer.val_check_batch),
            "check_val_every_n_epoch": trainer.check_val_every_n_epoch,
            "validates": bool(trainer.num_val_batches) and any(trainer.num_val_batches) and
            _whole(trainer.val_check_batch) is not None,
        }
        # a meter of unknown period (none in use): CodeCarbon's second
        period = self.energy.slowest_period_s() or 1.0
        self._wanted_s = self.energy.min_window_periods * period if self.batches is None \
            else math.inf
        if self.energy.warmup_steps == 0:
            self._open()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._seen += 1
        if self._edge is None:
            if self._seen >= self.energy.warmup_steps:
                self._open()  # the energy callback, ahead of this one, has left warm-up
            return
        self._measured += 1
        if self.batches is not None:
            every = max(1, math.ceil(self.batches / self.segments_wanted))
            if self._measured % every == 0 or self._measured >= self.batches:
                self._close()
            done = self._measured >= self.batches
        else:  # the clock alone decides when a stretch ends: the meters are read at its edges
            if time.perf_counter() - self._edge[2] >= self._wanted_s / self.segments_wanted:
                self._close()
            elapsed = sum(segment["s"] for segment in self.segments)
            done = elapsed >= self._wanted_s and len(self.segments) >= self.segments_wanted
        if done:
            trainer.should_stop = True

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:  # part of warm-up, as in every point
            return
        window = FIT if trainer.state.fn == "fit" else EVAL
        joules, seconds = self.energy.so_far(window)
        if window == FIT and self._edge is not None:
            self._close(joules)  # a validation is not training: the stretch ends here
        self._validation_start = (window, joules, seconds)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._validation_start is None:
            return
        window, joules, seconds = self._validation_start
        self._validation_start = None
        end_joules, end_seconds = self.energy.so_far(window)
        self.validations.append({"j": _difference(end_joules, joules), "s": end_seconds - seconds,
                                 "during_fit": window == FIT, "in_warmup": self._edge is None})
        if window == FIT and self._edge is not None:
            self._open(end_joules)  # the next stretch of training starts after it

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._edge is not None and self._measured > self._edge[0]:
            self._close()

    def summary(self) -> dict[str, Any]:
        """What the pilot measured, for ``sweep.plan`` to predict from."""
        return {"requested_batches": self.batches, "measured_batches": self._measured,
                "segments": self.segments, "validations": self.validations, **self.shape}

    def _open(self, joules: float | None = None) -> None:
        """Start a stretch here (at ``joules`` of fit when the meters were just read)."""
        if joules is None:
            joules, _ = self.energy.so_far(FIT)
        self._edge = (self._measured, joules, time.perf_counter())

    def _close(self, joules: float | None = None) -> None:
        """End the stretch here (at ``joules`` of fit when the meters were just read) and
        start the next."""
        start_batches, start_joules, started = self._edge
        if joules is None:
            joules, _ = self.energy.so_far(FIT)
        now = time.perf_counter()
        if self._measured > start_batches:
            self.segments.append({"batches": self._measured - start_batches,
                                  "j": _difference(joules, start_joules), "s": now - started})
        self._edge = (self._measured, joules, now)


def _whole(value: Any) -> int | None:
    """A count Lightning gives as a number (an int, or a float that may be inf)."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return int(value)
    return None


def _difference(end: float | None, start: float | None) -> float | None:
    return None if end is None or start is None else end - start
