"""``greenbench check``: read a sweep's results, decide every budget rule, show the verdicts.

Deciding is ``budget``'s, showing is ``verdicts``'; this module only wires them to their inputs
(the results, a stored baseline, the calibration file) and outputs (the terminal, the GitHub
job summary, JUnit XML), and says what the exit status should be. Every input and every place
an output goes is checked before anything is decided, so that bad input is one line and
nothing written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from greenbench import results
from greenbench.check import budget, calibration, verdicts
from greenbench.errors import UserError
from greenbench.files import atomic_write
from greenbench.records import OK

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


def check(budgets: Path, run_dir: Path | None, baseline: Path | None, junit: Path | None,
          strict: bool) -> bool:
    """Check the results in ``run_dir`` (default: the latest sweep) against ``budgets``;
    True when a rule failed (or, with ``strict``, was inconclusive)."""
    step_summary = Path(os.environ[STEP_SUMMARY]) if os.environ.get(STEP_SUMMARY) else None
    if junit:
        _writable(junit, "--junit")
    if step_summary:
        _writable(step_summary, f"${STEP_SUMMARY}")
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
    if junit:
        _write(junit, "--junit", verdicts.junit(decided, strict))
    if step_summary:
        _write(step_summary, f"${STEP_SUMMARY}", verdicts.markdown(decided, title, warnings),
               append=True)
    print(verdicts.terminal(decided, warnings, headline))
    failing = {budget.FAIL, budget.INCONCLUSIVE} if strict else {budget.FAIL}
    return any(v.result in failing for v in decided)


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
