"""``greenbench calibrate``: run every point of a sweep several times to measure this machine's
run-to-run spread (the identical point, same seed: what varies is the machine), and write it as
a calibration file (``greenbench.check.calibration``) for ``greenbench check`` to read."""

from __future__ import annotations

from pathlib import Path

from greenbench import results
from greenbench.check import calibration
from greenbench.errors import UserError
from greenbench.store import SweepStore
from greenbench.sweep.executors import LocalExecutor
from greenbench.sweep.progress import SweepProgress
from greenbench.sweep.runner import run_sweep
from greenbench.sweep.schema import Sweep, expand, load_sweep
from greenbench.yamlfile import validate


def calibrate(sweep_file: Path, repeats: int, out: Path | None, progress: SweepProgress) -> Path:
    """Run the sweep ``repeats`` times per point and write the spread; returns the file."""
    if repeats < 2:
        raise UserError("--repeats: at least 2 runs are needed to measure a spread")
    loaded = load_sweep(sweep_file)
    sweep = validate(Sweep, {**loaded.model_dump(exclude_unset=True), "repeats": repeats},
                     sweep_file)
    executor = LocalExecutor(scratch_dir=SweepStore(sweep.directory).scratch_dir,
                             warm=sweep.executor.start == "warm")
    run_sweep(sweep, executor, progress)
    wanted = {spec.run_id for spec in expand(sweep)}
    frame = results.load([sweep.directory])
    out = out or sweep_file.parent / calibration.FILE_NAME
    return calibration.write(out, sweep.name, repeats, frame[frame["run_id"].isin(wanted)])
