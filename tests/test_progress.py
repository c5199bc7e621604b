"""The sweep's progress output: permanent lines per point, a live line only on a terminal."""

from __future__ import annotations

import io

from greenbench.sweep.progress import SweepProgress
from tests.helpers import tiny_spec


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_output_has_one_line_per_point_and_no_control_characters() -> None:
    stream = io.StringIO()
    progress = SweepProgress(stream)
    progress.start("s", "runs/s", total=3, to_run=2)
    spec = tiny_spec()
    progress.begin_point(spec)
    progress.refresh()
    progress.end_point(spec, {"status": "ok", "reason": None})
    progress.begin_point(spec)
    progress.end_point(spec, {"status": "diverged", "reason": "loss became nan at step 3"})

    lines = stream.getvalue().splitlines()
    assert lines[0] == "s: 3 points, 1 already recorded, 2 to run; results in runs/s"
    assert lines[1].startswith(f"[2/3] ok       {spec.label}")
    assert "ETA" in lines[1]
    assert lines[2].startswith(f"[3/3] diverged {spec.label}")
    assert lines[2].endswith("(loss became nan at step 3)")
    assert "ETA" not in lines[2]  # nothing left
    assert "\r" not in stream.getvalue() and "running" not in stream.getvalue()


def test_terminal_output_redraws_a_live_line_and_clears_it() -> None:
    stream = Terminal()
    progress = SweepProgress(stream)
    progress.start("s", "runs/s", total=1, to_run=1)
    spec = tiny_spec()
    progress.begin_point(spec)
    progress.refresh()
    progress.end_point(spec, {"status": "ok", "reason": None})

    text = stream.getvalue()
    assert text.count(f"  running {spec.label}  0:00") == 2
    assert "\r\033[K[1/1] ok" in text  # the live line is cleared before the permanent one
    assert text.endswith("\n")
