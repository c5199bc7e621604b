"""``greenbench check``: read a sweep's results, decide every budget rule, show the verdicts.

Deciding is ``budget``'s, showing is ``verdicts``', ``exports``' and ``comment``'s; this module
only wires them to their inputs (the results, a stored baseline, the calibration file) and
outputs (the terminal, the GitHub job summary, JUnit XML, github-action-benchmark's and
Bencher's JSON, a pull-request comment), and says what the exit status should be. Every input
and every place an output goes is checked before anything is decided, and every output is
made before the first is written, so that bad input is one line and nothing written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from greenbench import results
from greenbench.check import budget, calibration, comment, exports, verdicts
from greenbench.errors import UserError
from greenbench.files import atomic_write
from greenbench.records import OK

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


@dataclass(frozen=True)
class Outputs:
    """Where ``check`` writes, besides the terminal and ``$GITHUB_STEP_SUMMARY``."""

    junit: Path | None = None
    benchmark_json: Path | None = None  # and its -bigger sibling, for higher-is-better entries
    bmf: Path | None = None
    comment: Path | None = None

    def files(self) -> list[tuple[Path, str]]:
        """Each file with the option that named it."""
        named = [(self.junit, "--junit"), (self.benchmark_json, "--benchmark-json"),
                 (self.benchmark_json and bigger(self.benchmark_json), "--benchmark-json"),
                 (self.bmf, "--bmf"), (self.comment, "--comment")]
        return [(path, what) for path, what in named if path is not None]


def bigger(path: Path) -> Path:
    return path.with_name(exports.bigger_path_name(path.name))


def check(budgets: Path, run_dir: Path | None, baseline: Path | None, junit: Path | None,
          strict: bool, outputs: Outputs | None = None) -> bool:
    """Check the results in ``run_dir`` (default: the latest sweep) against ``budgets``;
    True when a rule failed (or, with ``strict``, was inconclusive)."""
    outputs = outputs or Outputs()
    if junit:
        outputs = replace(outputs, junit=junit)
    step_summary = Path(os.environ[STEP_SUMMARY]) if os.environ.get(STEP_SUMMARY) else None
    seen: dict[Path, str] = {}
    for path, what in [*outputs.files(), *([(step_summary, f"${STEP_SUMMARY}")]
                                           if step_summary else [])]:
        _writable(path, what)
        other = seen.setdefault(path.resolve(), what)
        if other != what:
            raise UserError(f"{what}: {path} is also where {other} writes")
    folders = results.sweep_folders([run_dir] if run_dir else [])
    frame = results.load(folders)
    where_read = ", ".join(str(folder) for folder in folders)
    if frame.empty:
        raise UserError(f"{where_read}: no record here that this greenbench can read")
    columns = [c for c in frame if _numeric_column(frame[c])]
    rules = budget.load_budgets(budgets, columns, fields=list(frame.columns))
    stored = (_stored_results(baseline, budget.baseline_columns(rules, frame)) if baseline
              else None)
    decided = budget.evaluate(rules, frame, stored)
    where = budgets.parent / calibration.FILE_NAME
    warnings = calibration.warnings_for(rules, calibration.read(where), where)
    warnings += budget.shared_node_warnings(rules, frame)
    warnings += budget.unreliable_warnings(rules, frame)
    warnings += budget.quality_warnings(rules, frame)

    ok = int((frame["status"] == OK).sum())
    counted = f"{len(frame)} records" + (f", {ok} ok" if ok < len(frame) else "")
    headline = f"greenbench check: {budgets} on {where_read} ({counted})"
    title = (f"greenbench check: {budgets.name} on {', '.join(f.name for f in folders)} "
             f"({counted})")
    written = _made(outputs, decided, frame, title, warnings, strict)
    if step_summary:
        written.append((step_summary, f"${STEP_SUMMARY}",
                        verdicts.markdown(decided, title, warnings), True))
    for path, what, text, append in written:
        _write(path, what, text, append)
    print(verdicts.terminal(decided, warnings, headline))
    for path, what, _, _ in written:
        if what in ("--benchmark-json", "--bmf", "--comment"):
            print(f"{what}: wrote {path}")
    failing = {budget.FAIL, budget.INCONCLUSIVE} if strict else {budget.FAIL}
    return any(v.result in failing for v in decided)


def _made(outputs: Outputs, decided: list[budget.Verdict], frame: pd.DataFrame, title: str,
          warnings: list[str], strict: bool) -> list[tuple[Path, str, str, bool]]:
    """Every file to write, made in full before any is written: (path, option, text, append).
    github-action-benchmark's entries go to the file named when some are lower-is-better, and
    to its ``-bigger`` sibling when some are higher-is-better."""
    made: list[tuple[Path, str, str, bool]] = []
    if outputs.junit:
        made.append((outputs.junit, "--junit", verdicts.junit(decided, strict), False))
    if not (outputs.benchmark_json or outputs.bmf or outputs.comment):
        return made
    entries = exports.figures(decided, frame)
    if outputs.benchmark_json:
        smaller, larger = exports.benchmark_entries(entries)
        for path, items in ((outputs.benchmark_json, smaller),
                            (bigger(outputs.benchmark_json), larger)):
            if items:
                made.append((path, "--benchmark-json", exports.benchmark_json(items), False))
    if outputs.bmf:
        made.append((outputs.bmf, "--bmf", exports.bmf(entries), False))
    if outputs.comment:
        made.append((outputs.comment, "--comment", comment.comment(entries, title, warnings),
                     False))
    return made


def _writable(path: Path, what: str) -> None:
    """A ``UserError`` now, before anything is decided, unless ``path`` can be written."""
    folder = path.parent
    if path.is_dir():
        raise UserError(f"{what}: {path} is a folder, not a file")
    if not folder.is_dir():
        raise UserError(f"{what}: {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists()
                                                    and not os.access(path, os.W_OK)):
        raise UserError(f"{what}: {path}: cannot be written (permission denied)")


def _write(path: Path, what: str, text: str, append: bool = False) -> None:
    try:
        if append:
            with open(path, "a", encoding="utf-8") as file:
                file.write(text)
        else:
            atomic_write(path, text.encode("utf-8"))
    except OSError as error:
        raise UserError(f"{what}: {path}: cannot be written ({error.strerror})") from None


def _numeric_column(column: pd.Series) -> bool:
    return bool(pd.to_numeric(column, errors="coerce").notna().any())


def _stored_results(path: Path, needed: dict[str, str]) -> pd.DataFrame:
    """A results file from an earlier ``greenbench report``, with every column in ``needed``
    (column -> a rule that needs it)."""
    try:
        stored = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise UserError(f"--baseline: {path} cannot be read as results ({error})") from None
    if "status" not in stored:
        raise UserError(f"--baseline: {path} is not a results file (no status column)")
    for column, rule in needed.items():
        if column not in stored:
            raise UserError(f"--baseline: {path} has no {column!r} column, which rule {rule!r} "
                            "needs to compare with it")
    return stored
