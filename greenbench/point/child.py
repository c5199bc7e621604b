"""The point process: ``python -m greenbench.point.child HANDOFF_DIR PARENT_PID`` (a cold start),
or ``forked(...)`` in a process forked from the sweep's fork server (``server``), which has
imported torch, Lightning and greenbench once for the whole sweep.

The parent writes ``spec.json`` into HANDOFF_DIR and waits. The child runs the point and leaves
``record.json`` (renamed into place once complete) and the point's files under ``files/``, which
the parent reads and stores. The child never touches the results store, so a point can run in any
process, on any machine, that can hand those two things back.

Before anything heavy is imported, the child ties its life to its parent's, so that no orphan
ever trains a point twice: on Linux the kernel kills it when the parent dies
(``PR_SET_PDEATHSIG``), a check against PARENT_PID covers a parent that died before that was
armed, and a watch thread covers other systems. It then drops Lightning's ``PL_*`` environment
defaults (``PL_TRAINER_LIMIT_TRAIN_BATCHES`` and the like would change what is trained under the
same run_id) and records their names as ignored.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

AMBIENT_PREFIXES = ("PL_",)  # environment defaults Lightning would apply behind the spec's back
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


PROCESS_NAME = b"gb-point"  # what ps and /proc/<pid>/comm show for a point process


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m greenbench.point.child HANDOFF_DIR PARENT_PID", file=sys.stderr)
        return 2
    name_process()
    handoff, parent = Path(argv[0]), int(argv[1])
    die_with_parent(parent)
    return run_handoff(handoff, drop_ambient_settings())


def forked(handoff: str, environment: dict[str, str]) -> None:
    """The body of a point process forked from the fork server: its own session (Ctrl-C goes to
    the parent, which stops it), its output into the handoff folder's log, its parent's life."""
    name_process()
    os.setsid()
    log = os.open(Path(handoff) / "output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    die_with_parent(os.getppid())
    os.environ.update(environment)
    import tempfile

    tempfile.tempdir = None  # read TMPDIR again: this point's own folder
    sys.exit(run_handoff(Path(handoff), drop_ambient_settings()))


def run_handoff(handoff: Path, ignored: list[str]) -> int:
    """Run the point described in ``handoff/spec.json``; leave its record and files there."""
    from greenbench.point.run import run_point  # torch and Lightning: only now
    from greenbench.records import RunSpec, to_json

    spec = RunSpec.from_dict(json.loads((handoff / "spec.json").read_text(encoding="utf-8")))
    print(f"greenbench: point {spec.run_id} ({spec.label}) of sweep {spec.sweep}", flush=True)
    result = run_point(spec)
    result.record["environment"]["ignored_variables"] = ignored
    print(f"greenbench: point {spec.run_id} {result.record['status']}", flush=True)
    for relative, content in result.files.items():
        path = handoff / "files" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    partial = handoff / "record.json.partial"
    partial.write_text(to_json(result.record), encoding="utf-8")
    os.replace(partial, handoff / "record.json")
    return 0


def die_with_parent(parent: int, interval_s: float = 0.2, watch: bool = True) -> None:
    """End this process as soon as ``parent`` is no longer its parent (kill -9 included); the
    watch thread backs the kernel's death signal up (and stands in for it off Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(3)
    if not watch:
        return

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(3)

    threading.Thread(target=watch_parent, name="greenbench-parent-watch", daemon=True).start()


def name_process() -> None:
    """Call the process ``gb-point`` (``ps``, ``/proc/<pid>/comm``), however it was started."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_NAME, PROCESS_NAME, 0, 0, 0)


def drop_ambient_settings() -> list[str]:
    """Remove the environment variables that would change what is trained; their names."""
    names = sorted(name for name in os.environ if name.startswith(AMBIENT_PREFIXES))
    for name in names:
        del os.environ[name]
    return names


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
