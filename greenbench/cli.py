"""The ``greenbench`` command. Thin: parse the arguments, call a stage, map errors to exit codes.

Exit codes: 0 success; 1 a point failed; 2 bad input (one line on stderr, no traceback, nothing
written); 130 interrupted (what was finished is stored; the same command resumes).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from greenbench import __version__
from greenbench.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # before anything was started: nothing to clean up
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greenbench",
        description="What a training choice costs in joules, and what it buys in quality.",
    )
    parser.add_argument("--version", action="version", version=f"greenbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="train, measure and record every point of a sweep",
        description="Train every point of a sweep, each in its own process, and record it under "
        "<output_dir>/<name>/. Points already recorded are skipped; failed ones run again.",
    )
    run.add_argument("sweep", type=Path, help="the sweep file (YAML)")
    run.add_argument("--force", action="store_true", help="run every point again, even if recorded")
    run.add_argument("--dry-run", action="store_true",
                     help="list the points and which would run; write nothing")
    run.set_defaults(handler=_run)

    report = commands.add_parser(
        "report", help="quality-versus-energy tables, Pareto fronts, savings and plots",
        description="Summarise the records of one or more sweep folders into report.md, "
        "report.html, results.csv, results.parquet and plots. Runs no model.",
    )
    report.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR",
                        help="sweep folders (default: the most recently modified under runs/)")
    report.add_argument("--out", type=Path, help="output folder (default: reports/<sweep>/)")
    report.add_argument("--baseline", metavar="KEY=VALUE,...",
                        help="the configuration savings are measured against "
                        "(default: precision=32-true,width=1,data_fraction=1)")
    report.set_defaults(handler=_report)
    return parser


def _run(args: argparse.Namespace) -> int:
    from greenbench.executors import LocalExecutor
    from greenbench.progress import SweepProgress
    from greenbench.runner import plan, run_sweep
    from greenbench.sweep import load_sweep

    sweep = load_sweep(args.sweep)
    if args.dry_run:
        points = plan(sweep, args.force)
        waiting = {spec.run_id for spec in points.to_run}
        for spec in points.specs:
            state = "to run" if spec.run_id in waiting else points.records[spec.run_id]["status"]
            print(f"{spec.run_id}  {state:<9} {spec.label}")
        print(f"{len(points.specs)} points, {len(points.to_run)} to run; "
              f"results in {sweep.directory}")
        return EXIT_OK

    progress = SweepProgress()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops as cleanly as Ctrl-C
    try:
        outcome = run_sweep(sweep, LocalExecutor(), progress, force=args.force)
    except KeyboardInterrupt:
        progress.note(f"interrupted; finished points are stored in {sweep.directory}. "
                      "Run the same command again to resume.")
        return EXIT_INTERRUPTED
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.counts.items()))
    progress.note(f"{sweep.name}: {counts} ({outcome.ran} run now); "
                  f"records in {outcome.directory / 'records'}")
    return EXIT_FAILED if outcome.failed else EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from greenbench import results
    from greenbench.report import builder, tables

    folders = results.sweep_directories(args.run_dirs)
    try:
        baseline = tables.parse_baseline(args.baseline, list(tables.GROUP_KEYS))
    except ValueError as error:
        raise UserError(f"--baseline: {error}") from None
    out_dir = args.out or builder.default_out_dir(folders)
    try:
        written = builder.build(folders, out_dir, baseline)
    except OSError as error:
        raise UserError(f"{out_dir}: cannot write the report ({error.strerror})") from None
    print(f"wrote {len(written)} files to {out_dir}: open {out_dir / 'report.html'}, "
          f"or paste {out_dir / 'report.md'} into a pull request")
    return EXIT_OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
