"""What a sweep prints while it runs: one line per finished point, and a live status line.

Every finished point gets a permanent line (``[3/8] ok  gan 32-true w=0.5 ... 14.2 s``) with
the elapsed time and an estimate of what is left (from the rate at which points have finished,
so it holds when an executor runs several at once). On a terminal, a second line shows what is
running and for how long, redrawn in place; in a log file only the permanent lines appear.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from greenbench.records import RunSpec


class SweepProgress:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty()
        self.total = 0
        self.done = 0
        self._started = 0.0
        self._running: dict[str, tuple[str, float]] = {}  # run_id -> (label, started)
        self._finished_here = 0  # points this invocation has finished
        self._live_line = False

    def start(self, name: str, directory: str, total: int, to_run: int,
              what: str = "points") -> None:
        self.total, self.done = total, total - to_run
        self._started = time.monotonic()
        recorded = f", {self.done} already recorded" if self.done else ""
        self._print(f"{name}: {total} {what}{recorded}, {to_run} to run; results in {directory}")

    def begin_point(self, spec: RunSpec) -> None:
        self._running[spec.run_id] = (spec.label, time.monotonic())
        self.refresh()

    def refresh(self) -> None:
        """Redraw the live line (a terminal only)."""
        if not self.live or not self._running:
            return
        (label, started), *others = self._running.values()
        what = f"{label}  {_clock(time.monotonic() - started)}"
        if others:
            what = f"{len(self._running)} points, first {what}"
        self._clear_live()
        self.stream.write(f"  running {what}  ({self._timing()})")
        self.stream.flush()
        self._live_line = True

    def end_point(self, spec: RunSpec, record: dict[str, Any]) -> None:
        _, started = self._running.pop(spec.run_id, (spec.label, time.monotonic()))
        seconds = time.monotonic() - started
        self.done += 1
        self._finished_here += 1
        status = record["status"]
        reason = f"  ({record['reason']})" if record.get("reason") else ""
        self._print(
            f"[{self.done}/{self.total}] {status:<8} {spec.label}  {seconds:.1f} s  "
            f"{self._timing()}{reason}"
        )

    def note(self, message: str) -> None:
        self._print(message)

    def _timing(self) -> str:
        elapsed_s = time.monotonic() - self._started
        elapsed = _clock(elapsed_s)
        left = self.total - self.done
        if not left:
            return f"elapsed {elapsed}"
        if not self._finished_here:
            return f"elapsed {elapsed}, ETA --"
        return f"elapsed {elapsed}, ETA {_clock(left * elapsed_s / self._finished_here)}"

    def _print(self, line: str) -> None:
        self._clear_live()
        print(line, file=self.stream, flush=True)

    def _clear_live(self) -> None:
        if self._live_line:
            self.stream.write("\r\033[K")
            self._live_line = False


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
