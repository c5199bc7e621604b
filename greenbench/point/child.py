"""The process that runs one point: ``python -m greenbench.point.child HANDOFF_DIR``.

The parent writes ``spec.json`` into HANDOFF_DIR and waits. The child runs the point and leaves
``record.json`` (renamed into place once complete) and the point's files under ``files/``, which
the parent reads and stores. The child never touches the results store, so a point can run in any
process, on any machine, that can hand those two things back.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from greenbench.point.run import run_point
from greenbench.records import RunSpec, to_json


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m greenbench.point.child HANDOFF_DIR", file=sys.stderr)
        return 2
    handoff = Path(argv[0])
    _exit_with_parent()
    spec = RunSpec.from_dict(json.loads((handoff / "spec.json").read_text(encoding="utf-8")))
    print(f"greenbench: point {spec.run_id} ({spec.label}) of sweep {spec.sweep}", flush=True)
    result = run_point(spec)
    print(f"greenbench: point {spec.run_id} {result.record['status']}", flush=True)
    for relative, content in result.files.items():
        path = handoff / "files" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    partial = handoff / "record.json.partial"
    partial.write_text(to_json(result.record), encoding="utf-8")
    os.replace(partial, handoff / "record.json")
    return 0


def _exit_with_parent(interval_s: float = 0.5) -> None:
    """End this process if the parent dies (kill -9 included), so no orphan keeps training."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(3)

    threading.Thread(target=watch, name="greenbench-parent-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
