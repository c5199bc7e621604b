"""The local executor: each point in a fresh Python process on this machine, one at a time.

A crash or an out-of-memory kill takes down that point only, every point starts with clean
accelerator state, and the energy a process draws belongs to one run. A point whose process dies
without a record is recorded ``failed`` with how it died and the last line it printed.

Two ways to start a point's process, the same process either way:

* **warm** (the default): one fork server per sweep imports torch, Lightning, CodeCarbon and
  greenbench once (never touching CUDA), and every point is forked from it: a fresh process in
  tens of milliseconds instead of seconds of imports per point;
* **cold**: ``python -m greenbench.point.child``, a new interpreter per point.

Either way the point runs in its own session (Ctrl-C reaches the parent, which stops it), writes
its output to its own log, and dies with its parent (``greenbench.point.child``). A GPU point sees
the first ``trainer.devices`` of the node's GPUs and no other (``CUDA_VISIBLE_DEVICES``); an idle
baseline is shared only between points on the same devices (``sweep.devices``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from greenbench import environment
from greenbench.records import PointResult, RunSpec, failed_record
from greenbench.sweep.devices import cuda_visible_devices, devices_key, visible_gpus
from greenbench.sweep.progress import SweepProgress


class LocalExecutor:
    """Run points one at a time, each in its own ``python -m greenbench.point.child`` process."""

    name = "local"

    def __init__(self, python: str = sys.executable, poll_s: float = 0.5,
                 scratch_dir: Path | None = None, warm: bool = True):
        self.python = python
        self.poll_s = poll_s
        self.warm = warm
        # the latest idle baseline a point measured here, by the devices it measured
        self._baselines: dict[tuple[str, int], dict] = {}
        self._gpus: int | None = None  # how many GPUs this node shows, once asked
        self._first_temperature_c: float | None = None  # the GPUs' when the sweep began
        self._server: _ForkServer | None = None
        # Each point's handoff folder (and its temporary files) goes here; the store clears it
        # on the next run of the sweep, so a killed run leaves nothing behind for long.
        self.scratch_dir = scratch_dir

    def run_all(
        self, specs: list[RunSpec], progress: SweepProgress
    ) -> Iterator[tuple[RunSpec, PointResult]]:
        """Run the points one after the other, yielding each result as it is ready."""
        try:
            for spec in specs:
                progress.begin_point(spec)
                yield spec, self.run(spec, on_wait=progress.refresh)
        finally:
            self.close()

    def run(self, spec: RunSpec, on_wait: Callable[[], None] | None = None) -> PointResult:
        """Run one point to its end; ``on_wait`` is called every ``poll_s`` while it runs."""
        spec = self._with_baseline(spec)
        started = time.monotonic()
        if self.scratch_dir is not None:
            self.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="greenbench-point-", dir=self.scratch_dir) as tmp:
            handoff = Path(tmp)
            (handoff / "spec.json").write_text(json.dumps(spec.to_dict()), encoding="utf-8")
            (handoff / "tmp").mkdir()
            log_path = handoff / "output.log"
            log_path.touch()
            process = self._start(handoff, self._devices(spec))
            try:
                self._wait(process, on_wait)
            except BaseException:
                process.stop()
                raise
            output = log_path.read_bytes()
            result = _collect(handoff) if process.returncode == 0 else None
            if result is None:
                result = _died(spec, process.returncode, output)
        if self.scratch_dir is not None:
            with contextlib.suppress(OSError):  # left only while another point is running
                self.scratch_dir.rmdir()
        self._keep_baseline(spec, result.record)
        result.record["timings"]["process_s"] = round(time.monotonic() - started, 3)
        result.record.update(executor=self.name, node=socket.gethostname(), node_concurrency=1)
        result.files[f"logs/{spec.run_id}.log"] = output
        return result

    def _with_baseline(self, spec: RunSpec) -> RunSpec:
        """The spec with this node's latest idle baseline, unless that is older than the
        sweep's ``idle_every_s`` (0: every point measures its own)."""
        if self._first_temperature_c is not None:
            spec = dataclasses.replace(spec, energy={
                **spec.energy, "reference_temperature_c": self._first_temperature_c})
        every_s = spec.energy.get("idle_every_s", 0)
        baseline = self._baselines.get(devices_key(spec))  # of the same devices only
        if baseline is None or not every_s:
            return spec
        age = datetime.now(timezone.utc) - datetime.fromisoformat(baseline["taken_at"])
        if age.total_seconds() > every_s:
            return spec
        return dataclasses.replace(spec, energy={**spec.energy, "baseline": baseline})

    def _keep_baseline(self, spec: RunSpec, record: dict) -> None:
        """Remember the idle baseline a point measured itself, for the points after it that
        measure the same devices, and the first temperature a point found, for their
        cool-down."""
        energy = record.get("energy") or {}
        if self._first_temperature_c is None and (energy.get("cooldown") or {}).get("start_c"):
            self._first_temperature_c = energy["cooldown"]["start_c"]
        measured = energy.get("baseline")
        if measured and not measured["shared"] and energy.get("idle_power_w") is not None:
            self._baselines[devices_key(spec)] = {**measured, "taken_by": record["run_id"],
                                                  "window": energy["windows"]["idle"]}

    def _devices(self, spec: RunSpec) -> dict[str, str]:
        """The point's share of the node's GPUs: the first ``trainer.devices`` of them."""
        if self._gpus is None:
            self._gpus = visible_gpus()
        shown = cuda_visible_devices(spec, self._gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
        return {} if shown is None else {"CUDA_VISIBLE_DEVICES": shown}

    def _start(self, handoff: Path, devices: dict[str, str]) -> _ColdPoint | _WarmPoint:
        environment = {**_child_environment(handoff / "tmp"), **devices}
        if not self.warm:
            return _ColdPoint(self.python, handoff, environment)
        if self._server is None or not self._server.alive:
            folder = (self.scratch_dir or Path(tempfile.gettempdir())) / f"server-{os.getpid()}"
            self._server = _ForkServer(self.python, folder)
        return _WarmPoint(self._server, handoff, environment)

    def close(self) -> None:
        """Stop the fork server, if one was started; the next point starts a new one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.scratch_dir is not None:
            with contextlib.suppress(OSError):  # gone, or a point of another run is still here
                self.scratch_dir.rmdir()

    def _wait(self, process: _ColdPoint | _WarmPoint,
              on_wait: Callable[[], None] | None) -> None:
        while not process.wait(self.poll_s):
            if on_wait is not None:
                on_wait()


class _ColdPoint:
    """A point in a new interpreter: ``python -m greenbench.point.child``."""

    def __init__(self, python: str, handoff: Path, environment: dict[str, str]):
        with open(handoff / "output.log", "ab") as log:
            self._process = subprocess.Popen(
                [python, "-m", "greenbench.point.child", str(handoff), str(os.getpid())],
                env={**os.environ, **environment}, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the parent, which stops the child
            )
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def wait(self, timeout: float) -> bool:
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, grace_s: float = 5.0) -> None:
        """On interrupt: SIGTERM, then SIGKILL if it lingers."""
        if self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class _WarmPoint:
    """A point forked from the sweep's fork server (``greenbench.point.server``)."""

    def __init__(self, server: _ForkServer, handoff: Path, environment: dict[str, str]):
        self._server = server
        self.pid = server.fork(handoff, environment)
        self.returncode: int | None = None

    def wait(self, timeout: float) -> bool:
        if self.returncode is None:
            self.returncode = self._server.exit_status(self.pid, timeout)
        return self.returncode is not None

    def stop(self, grace_s: float = 5.0) -> None:
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if not self.wait(grace_s):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            while not self.wait(1.0):
                pass


class _ForkServer:
    """The parent's end of ``python -m greenbench.point.server``: started on first use, its
    temporary files in its own folder, stopped (and the folder removed) by ``close``."""

    def __init__(self, python: str, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [python, "-m", "greenbench.point.server", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "TMPDIR": str(folder)}, start_new_session=True,
        )
        self._exited: dict[int, int] = {}
        self._buffer = b""
        if "ready" not in self._next(timeout=None):
            raise RuntimeError("the fork server did not start")

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def fork(self, handoff: Path, environment: dict[str, str]) -> int:
        request = json.dumps({"handoff": str(handoff), "environment": environment})
        self._process.stdin.write(request.encode() + b"\n")
        self._process.stdin.flush()
        while True:
            message = self._next(timeout=None)
            if "started" in message:
                return message["started"]

    def exit_status(self, pid: int, timeout: float) -> int | None:
        """The point's exit status (negative: killed by that signal), or None by ``timeout``."""
        deadline = time.monotonic() + timeout
        while pid not in self._exited:
            left = deadline - time.monotonic()
            if left <= 0 or not self._next(timeout=left):
                break
        return self._exited.pop(pid, None)

    def close(self) -> None:
        if self._process.stdin and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _next(self, timeout: float | None) -> dict:
        """The server's next message ({} when none came in time)."""
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._process.stdout], [], [], timeout)
            if not ready:
                return {}
            chunk = os.read(self._process.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"the fork server exited ({self._process.wait()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message = json.loads(line)
        if "exited" in message:
            self._exited[message["exited"]] = message["status"]
        return message


def _child_environment(tmp: Path) -> dict[str, str]:
    """What a point's process sets in its environment, over the parent's."""
    # The point's energy meter finds its GPU by the UUID torch gives; where torch gives none it
    # falls back to the index, and CUDA numbers GPUs fastest first by default, NVML by PCI bus:
    # make CUDA use the bus order too, so that the index means the same GPU to both (the Ray
    # executor's points run through here as well). The point's temporary files (CodeCarbon's
    # CSV folder, Lightning's root) go inside its handoff folder.
    return {"TMPDIR": str(tmp),
            "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")}


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
    reason = f"the point's process {_exit_description(returncode)}"
    last = last_meaningful_line(output.decode(errors="replace"))
    if last:
        reason += f"; its last line of output: {last}"
    return PointResult(failed_record(spec, reason, environment.describe()))


# Lines a point's output may end with that say nothing about how it died: Lightning's banners
# and tips, and greenbench's own progress lines.
_BANNERS = re.compile(
    r"^(💡|Tip:|(GPU|TPU|HPU|IPU|MPS) available:|LOCAL_RANK:|greenbench: point |"
    r"You are using a CUDA device|Seed set to|`Trainer\.fit` stopped)"
)


def last_meaningful_line(output: str) -> str | None:
    """The last line of a point's output that is not a banner or a progress line."""
    for line in reversed(output.splitlines()):
        text = line.strip()
        if text and not _BANNERS.match(text):
            return text[:300]
    return None


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
