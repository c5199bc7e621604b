"""A rank above 0 of a point on several devices: ``python -m greenbench.point.rank_process SPEC
PARENT_PID``, started by rank 0 (``ranks``). Before anything heavy is imported it ties its life
to rank 0's, as a point process does to its parent's (``child``); then it trains
(``run.follow``). An error leaves its last line beside SPEC for rank 0 to name."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

from greenbench.point.child import die_with_parent, drop_ambient_settings, name_process
from greenbench.point.ranks import error_file


def main(argv: list[str]) -> int:
    """A rank above 0: tie its life to rank 0's, then train (``run.follow``)."""
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m greenbench.point.rank_process SPEC PARENT_PID", file=sys.stderr)
        return 2
    name_process()
    spec_path, parent = Path(argv[0]), int(argv[1])
    die_with_parent(parent)
    drop_ambient_settings()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches rank 0's parent, which stops it
    from greenbench.point.run import follow  # torch and Lightning: only now
    from greenbench.records import RunSpec, last_line

    try:
        follow(RunSpec.from_dict(json.loads(spec_path.read_text(encoding="utf-8"))))
    except Exception as error:
        traceback.print_exc()
        rank = os.environ.get("LOCAL_RANK", "?")
        error_file(spec_path, int(rank) if rank.isdigit() else 0).write_text(
            last_line(error), encoding="utf-8")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
