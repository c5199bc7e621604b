"""A point on several devices: the point process is rank 0, starts the other ranks itself and
keeps every rank's decisions one.

Lightning's own launchers do not fit a point process: its subprocess launcher runs the parent's
command line again (the fork server's, for a warm start), and spawn or fork launchers pickle the
callbacks (the meters hold threads) and bring back only rank 0's metrics. So rank 0 starts
ranks 1..N-1 as ``python -m greenbench.point.rank_process SPEC PARENT_PID`` with the
environment Lightning's launcher gives its children (``LOCAL_RANK``, ``NODE_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and sets the same in its own, so that Lightning
creates no process: every strategy runs with processes created outside it. A spawn or fork
strategy (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``) is run as its ``ddp`` form, which is the
same training started differently (``launched_strategy``); the record keeps the strategy asked
for.

The rules of a point process hold for its ranks:

* A rank dies with rank 0 from its first instant (``PR_SET_PDEATHSIG``, armed from rank 0's
  main thread, and a check of its parent before anything is imported), and rank 0 dies with the
  parent; so nothing of a point outlives ``kill -9`` of ``greenbench run``.
* A rank's output is rank 0's: the point's log.
* A rank that fails fails the point, with the rank's error as the reason. Where rank 0 does not
  notice within ``GRACE_S`` (it may wait for the rank inside a collective forever), a watch
  thread prints that error and ends rank 0 with status 1: the parent records the point failed,
  with that line as the reason.

Rank 0 alone measures (CodeCarbon once for the node, NVML for every rank's GPU), scores and writes
the record; the other ranks train (``run.follow``). ``RankSync``, the last callback on every
rank, keeps them one: ``should_stop`` is the same on every rank after each training batch,
validation and epoch (so a budget, a divergence, a pilot or a quality target seen on one rank
ends fit on all of them at the same batch), the other ranks wait while rank 0 takes its idle
baseline, and at the end of training every rank's samples, and why it stopped, come to rank 0.
After fit, rank 0 tells the others whether to validate once more (``tell``/``told``). All of this
travels over a CPU (gloo) group: a flag per batch, never a device synchronisation.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from greenbench.records import TRAINER_KEY

# Lightning's spawn and fork strategies: the same training as their ddp form, started another way.
_LAUNCHER_SUFFIX = re.compile(r"_(spawn|fork|notebook)(?=_|$)")
RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
VALIDATE, DONE = "validate", "done"
GRACE_S = 5.0  # how long ranks get to end on their own once rank 0 is done


def world_size(section: dict[str, Any] | None) -> int:
    """How many processes a point with this trainer section runs as (``devices``, 1 if not
    given; the sweep has checked it is a whole number)."""
    devices = (section or {}).get("devices", 1)
    return devices if isinstance(devices, int) and devices > 1 else 1


def launched_strategy(strategy: Any) -> Any:
    """The strategy Lightning is given when greenbench starts the ranks: a spawn or fork
    strategy's ``ddp`` form (``ddp_spawn`` -> ``ddp``); any other unchanged."""
    return _LAUNCHER_SUFFIX.sub("", strategy) if isinstance(strategy, str) else strategy


class Ranks:
    """Ranks 1..N-1 of the point this process runs as rank 0; see the module docstring."""

    def __init__(self, world: int, spec_path: Path):
        self.world = world
        self.spec_path = spec_path
        self._saved = {name: os.environ.get(name) for name in RANK_VARIABLES}
        os.environ.update(LOCAL_RANK="0", NODE_RANK="0", WORLD_SIZE=str(world),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        self.processes: list[subprocess.Popen] = []
        self._done = threading.Event()
        for rank in range(1, world):
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "greenbench.point.rank_process", str(spec_path),
                 str(os.getpid())],
                env={**os.environ, "LOCAL_RANK": str(rank)}, stdin=subprocess.DEVNULL))
        threading.Thread(target=self._watch, name="greenbench-rank-watch", daemon=True).start()

    @property
    def pids(self) -> list[int]:
        """Every rank's process id, rank 0's first."""
        return [os.getpid(), *(process.pid for process in self.processes)]

    def finish(self) -> None:
        """Let the ranks end (``GRACE_S`` at most), stop those that did not, and give this
        process its environment back."""
        self._done.set()
        deadline = time.monotonic() + GRACE_S
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def failure(self) -> str | None:
        """Why the first rank that failed did (``rank 1 of 2 failed: ...``); None when none
        has."""
        for rank, process in enumerate(self.processes, start=1):
            code = process.poll()
            if code is not None and code != 0:
                error = error_file(self.spec_path, rank)
                why = error.read_text(encoding="utf-8").strip() if error.is_file() else \
                    f"exited with status {code}"
                return f"rank {rank} of {self.world} failed: {why}"
        return None

    def _watch(self, interval_s: float = 0.2) -> None:
        while not self._done.wait(interval_s):
            failure = self.failure()
            # rank 0 fails the point itself when its collective notices (gloo does); where it
            # does not within the grace, it may wait inside a collective forever: end it
            if failure is not None and not self._done.wait(GRACE_S):
                print(f"greenbench: {failure}", file=sys.stderr, flush=True)
                os._exit(1)


@contextmanager
def started(spec: Any, folder: Path) -> Iterator[Ranks | None]:
    """The point's other ranks while the block runs (None for a point on one device); they are
    stopped when it ends, however it ends."""
    world = world_size(spec.config.get(TRAINER_KEY))
    if world == 1:
        yield None
        return
    spec_path = folder / "rank-spec.json"
    spec_path.write_text(json.dumps(spec.to_dict()), encoding="utf-8")
    ranks = Ranks(world, spec_path)
    try:
        yield ranks
    finally:
        ranks.finish()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def error_file(spec_path: Path, rank: int) -> Path:
    """Where rank ``rank`` leaves the last line of the error it failed with."""
    return spec_path.with_name(f"rank-{rank}.error")
