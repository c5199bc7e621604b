"""The local executor: each point in a fresh Python process on this machine, one at a time.

A crash or an out-of-memory kill takes down that point only, every point starts with clean
accelerator state, and the energy a process draws belongs to one run. A point whose process dies
without a record is recorded ``failed`` with how it died and the last line it printed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from greenbench import environment
from greenbench.records import PointResult, RunSpec, failed_record
from greenbench.sweep.progress import SweepProgress


class LocalExecutor:
    """Run points one at a time, each in its own ``python -m greenbench.point.child`` process."""

    name = "local"

    def __init__(self, python: str = sys.executable, poll_s: float = 0.5):
        self.python = python
        self.poll_s = poll_s

    def run_all(
        self, specs: list[RunSpec], progress: SweepProgress
    ) -> Iterator[tuple[RunSpec, PointResult]]:
        """Run the points one after the other, yielding each result as it is ready."""
        for spec in specs:
            progress.begin_point(spec)
            yield spec, self.run(spec, on_wait=progress.refresh)

    def run(self, spec: RunSpec, on_wait: Callable[[], None] | None = None) -> PointResult:
        """Run one point to its end; ``on_wait`` is called every ``poll_s`` while it runs."""
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="greenbench-") as tmp:
            handoff = Path(tmp)
            (handoff / "spec.json").write_text(json.dumps(spec.to_dict()), encoding="utf-8")
            log_path = handoff / "output.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    [self.python, "-m", "greenbench.point.child", str(handoff)],
                    env=_child_environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the parent, which stops the child
                )
                try:
                    self._wait(process, on_wait)
                except BaseException:
                    _stop(process)
                    raise
            output = log_path.read_bytes()
            result = _collect(handoff) if process.returncode == 0 else None
            if result is None:
                result = _died(spec, process.returncode, output)
        result.record["timings"]["process_s"] = round(time.monotonic() - started, 3)
        result.record.update(executor=self.name, node=socket.gethostname(), node_concurrency=1)
        result.files[f"logs/{spec.run_id}.log"] = output
        return result

    def _wait(self, process: subprocess.Popen, on_wait: Callable[[], None] | None) -> None:
        while True:
            try:
                process.wait(timeout=self.poll_s)
                return
            except subprocess.TimeoutExpired:
                if on_wait is not None:
                    on_wait()


def _child_environment() -> dict[str, str]:
    # CUDA numbers GPUs fastest first by default, NVML by PCI bus: make CUDA use the bus order
    # too, so that the GPU a point trains on is the GPU its energy meter reads.
    return {**os.environ, "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")}


def _collect(handoff: Path) -> PointResult | None:
    try:
        record = json.loads((handoff / "record.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files_dir = handoff / "files"
    files = {
        path.relative_to(files_dir).as_posix(): path.read_bytes()
        for path in sorted(files_dir.rglob("*"))
        if path.is_file()
    }
    return PointResult(record, files)


def _died(spec: RunSpec, returncode: int, output: bytes) -> PointResult:
    how = _exit_description(returncode)
    lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
    reason = f"the point's process {how}" + (f": {lines[-1].strip()}" if lines else "")
    return PointResult(failed_record(spec, reason, environment.describe()))


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    if returncode == 0:
        return "ended without writing a record"
    return f"exited with status {returncode}"


def _stop(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop a child on interrupt: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
