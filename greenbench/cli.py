"""The ``greenbench`` command. Thin: parse the arguments, call a stage, map errors to exit codes.

Exit codes: 0 success; 1 a point (or a plan's pilot) failed; 2 bad input (one line on stderr,
no traceback, nothing written); 130 interrupted (what was finished is stored; the same command
resumes).
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
    run.add_argument("--executor", choices=("local", "ray"),
                     help="where points run (default: the sweep's executor.kind, else local)")
    run.add_argument("--address", help="ray: the cluster to join ('auto' or host:port; "
                     "default: the sweep's executor.address, else a Ray instance started here)")
    run.set_defaults(handler=_run)

    plan = commands.add_parser(
        "plan", help="predict a sweep's training energy and time from a short pilot of each "
        "configuration",
        description="Run a short pilot of each configuration of a sweep (every axis but seed "
        "and repeat: warm-up, then N measured training batches) and predict each point's "
        "training energy and time. Prints a table and writes <output_dir>/<name>/plan.json; "
        "report and run --dry-run show it beside what was measured.",
    )
    plan.add_argument("sweep", type=Path, help="the sweep file (YAML)")
    plan.add_argument("--pilot-steps", type=int, metavar="N",
                      help="measured training batches per pilot, after warm-up (default: as "
                      "many as make the pilot a reliable window for its meter, 10 periods)")
    plan.add_argument("--force", action="store_true",
                      help="run every pilot again, even those an earlier plan kept")
    plan.add_argument("--executor", choices=("local", "ray"),
                      help="where pilots run (default: the sweep's executor.kind, else local)")
    plan.set_defaults(handler=_plan)

    report = commands.add_parser(
        "report", help="quality-versus-energy tables, Pareto fronts, savings and plots",
        description="Summarise the records of one or more sweep folders into report.md, "
        "report.html, results.csv, results.parquet and plots. Runs no model.",
    )
    report.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR",
                        help="sweep folders (default: the most recently modified under runs/)")
    report.add_argument("--out", type=Path, help="output folder (default: report/ in the first "
                        "sweep folder, runs/<name>/report/)")
    report.add_argument("--baseline", metavar="KEY=VALUE,...",
                        help="the configuration savings are measured against "
                        "(default: precision=32-true,width=1,data_fraction=1)")
    report.set_defaults(handler=_report)

    check = commands.add_parser(
        "check", help="fail CI when an energy budget is broken",
        description="Check the results of a sweep against the rules of a budgets file. Exit 0 "
        "when every rule passes (INCONCLUSIVE too, unless --strict), 1 when one fails, 2 for a "
        "bad budgets file or a rule that selects no runs.",
    )
    check.add_argument("budgets", type=Path, metavar="BUDGETS.yaml")
    check.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR",
                       help="the sweep folder (default: the most recently modified under runs/)")
    check.add_argument("--baseline", type=Path, metavar="RESULTS.csv",
                       help="stored results (a report's results.csv) for ratio rules without "
                       "relative_to")
    check.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML")
    check.add_argument("--benchmark-json", type=Path, metavar="FILE",
                       help="also write github-action-benchmark's custom JSON: lower-is-better "
                       "entries to FILE, higher-is-better ones to FILE with -bigger before its "
                       "extension")
    check.add_argument("--bmf", type=Path, metavar="FILE",
                       help="also write Bencher Metric Format JSON")
    check.add_argument("--comment", type=Path, metavar="FILE",
                       help="also write a Markdown comment for a pull request")
    check.add_argument("--strict", action="store_true", help="INCONCLUSIVE fails too")
    check.set_defaults(handler=_check)

    calibrate = commands.add_parser(
        "calibrate", help="measure this machine's run-to-run spread for budget tolerances",
        description="Run every point of a sweep several times and write the run-to-run "
        "variation of each metric to calibration.json; check warns about tolerances below it.",
    )
    calibrate.add_argument("sweep", type=Path, help="the sweep file (YAML)")
    calibrate.add_argument("--repeats", type=int, default=5, help="runs per point (default 5)")
    calibrate.add_argument("--out", type=Path,
                           help="where to write (default: calibration.json beside the sweep)")
    calibrate.set_defaults(handler=_calibrate)
    return parser


def _run(args: argparse.Namespace) -> int:
    from greenbench.store import SweepStore
    from greenbench.sweep.executors import make_executor
    from greenbench.sweep.progress import SweepProgress
    from greenbench.sweep.runner import plan, run_sweep
    from greenbench.sweep.schema import load_sweep

    sweep = load_sweep(args.sweep)
    overrides = {key: value for key, value in (("kind", args.executor), ("address", args.address))
                 if value is not None}
    if args.address is not None and (args.executor or sweep.executor.kind) != "ray":
        raise UserError("--address: only the ray executor joins a cluster (add --executor ray)")
    executor_settings = sweep.executor.model_copy(update=overrides)
    if args.dry_run:
        from greenbench.results import read_plan

        points = plan(sweep, args.force)
        waiting = {spec.run_id for spec in points.to_run}
        predicted = {point["run_id"]: point for point in
                     (read_plan(sweep.directory) or {}).get("points", [])
                     if isinstance(point, dict)}
        try:
            for spec in points.specs:
                state = ("to run" if spec.run_id in waiting
                         else points.records[spec.run_id]["status"])
                print(f"{spec.run_id}  {state:<9} {spec.label}"
                      f"{_prediction(predicted.get(spec.run_id))}")
            print(f"{len(points.specs)} points, {len(points.to_run)} to run; "
                  f"results in {sweep.directory}{_predicted_total(points.to_run, predicted)}")
            sys.stdout.flush()
        except BrokenPipeError:  # `... --dry-run | head`: the reader has read what it wanted
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return EXIT_OK

    progress = SweepProgress()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops as cleanly as Ctrl-C
    try:
        executor = make_executor(executor_settings, SweepStore(sweep.directory).scratch_dir)
        outcome = run_sweep(sweep, executor, progress, force=args.force)
    except KeyboardInterrupt:
        progress.note(f"interrupted; finished points are stored in {sweep.directory}. "
                      "Run the same command again to resume.")
        return EXIT_INTERRUPTED
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.counts.items()))
    progress.note(f"{sweep.name}: {counts} ({outcome.ran} run now); "
                  f"records in {outcome.directory / 'records'}")
    return EXIT_FAILED if outcome.failed else EXIT_OK


def _prediction(point: dict | None) -> str:
    """A point's predicted training energy and time from the sweep's plan.json, as the dry
    run shows it."""
    if point is None or not isinstance(point.get("predicted_fit_j"), (int, float)):
        return ""
    bound = "at most " if point.get("upper_bound") else ""
    return (f"  predicted {bound}{point['predicted_fit_j']:.4g} J, "
            f"{point.get('predicted_fit_s', float('nan')):.3g} s")


def _predicted_total(to_run: list, predicted: dict) -> str:
    values = [predicted.get(spec.run_id, {}).get("predicted_fit_j") for spec in to_run]
    if not predicted or not to_run:
        return ""
    if any(not isinstance(value, (int, float)) for value in values):
        return "; plan.json predicts only some of the points to run"
    return f"; plan.json predicts {sum(values):.4g} J of training for those to run"


def _plan(args: argparse.Namespace) -> int:
    from greenbench.store import SweepStore
    from greenbench.sweep.executors import make_executor
    from greenbench.sweep.plan import run_plan, table_lines
    from greenbench.sweep.progress import SweepProgress
    from greenbench.sweep.schema import load_sweep

    if args.pilot_steps is not None and args.pilot_steps < 1:
        raise UserError("--pilot-steps: give 1 or more training batches")
    sweep = load_sweep(args.sweep)
    settings = sweep.executor.model_copy(update={"kind": args.executor} if args.executor else {})
    progress = SweepProgress()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        executor = make_executor(settings, SweepStore(sweep.directory).scratch_dir)
        plan = run_plan(sweep, executor, progress, args.pilot_steps, args.force)
    except KeyboardInterrupt:
        progress.note(f"interrupted; finished pilots are kept in {sweep.directory}. "
                      "Run the same command again to resume.")
        return EXIT_INTERRUPTED
    for line in table_lines(plan):
        print(line)
    print(f"plan written to {sweep.directory / 'plan.json'}")
    failed = any(pilot["status"] != "ok" for pilot in plan["pilots"])
    return EXIT_FAILED if failed else EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from greenbench import results
    from greenbench.records import CONFIGURATION_FIELDS, is_argument
    from greenbench.report import builder, tables

    folders = results.sweep_folders(args.run_dirs)
    records = results.read_records(folders)  # a warning on stderr for each file skipped
    # A baseline may name any configuration field, or any argument these runs were given
    # (model.init_args.lr, data.init_args.batch_size, trainer.gradient_clip_val).
    arguments = {column for record in records for column in results.flatten(record)
                 if is_argument(column)}
    try:
        baseline = tables.parse_baseline(args.baseline, [*CONFIGURATION_FIELDS, *arguments])
    except ValueError as error:
        raise UserError(f"--baseline: {error}") from None
    where = ", ".join(str(folder) for folder in folders)
    print(f"read {len(records)} record{'s' if len(records) != 1 else ''} from {where}",
          flush=True)
    out_dir = args.out or builder.default_out_dir(folders)
    try:
        written = builder.build(folders, out_dir, baseline, records)
    except OSError as error:
        raise UserError(f"{out_dir}: cannot write the report ({error.strerror})") from None
    print(f"wrote {len(written)} files to {out_dir}: open {out_dir / 'report.html'}, "
          f"or paste {out_dir / 'report.md'} into a pull request")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from greenbench.check.command import Outputs, check

    outputs = Outputs(benchmark_json=args.benchmark_json, bmf=args.bmf, comment=args.comment)
    failed = check(args.budgets, args.run_dir, args.baseline, args.junit, args.strict, outputs)
    return EXIT_FAILED if failed else EXIT_OK


def _calibrate(args: argparse.Namespace) -> int:
    from greenbench.sweep.calibrate import calibrate
    from greenbench.sweep.progress import SweepProgress

    progress = SweepProgress()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        written = calibrate(args.sweep, args.repeats, args.out, progress)
    except KeyboardInterrupt:
        progress.note("interrupted; run the same command again to resume")
        return EXIT_INTERRUPTED
    progress.note(f"wrote {written}")
    return EXIT_OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
