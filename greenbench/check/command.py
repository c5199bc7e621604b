"""``greenbench check``: read a sweep's results, decide every budget rule, show the verdicts.

Deciding is ``budget``'s, showing is ``verdicts``'; this module only wires them to their inputs
(the results, a stored baseline, the calibration file) and outputs (the terminal, the GitHub
job summary, JUnit XML), and says what the exit status should be.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from greenbench import results
from greenbench.check import budget, calibration, verdicts
from greenbench.errors import UserError


def check(budgets: Path, run_dir: Path | None, baseline: Path | None, junit: Path | None,
          strict: bool) -> bool:
    """Check the results in ``run_dir`` (default: the latest sweep) against ``budgets``;
    True when a rule failed (or, with ``strict``, was inconclusive)."""
    folders = results.sweep_folders([run_dir] if run_dir else [])
    frame = results.load(folders)
    columns = [c for c in frame if _numeric_column(frame[c])]
    rules = budget.load_budgets(budgets, columns)
    stored = _stored_results(baseline) if baseline else None
    decided = budget.evaluate(rules, frame, stored)
    where = budgets.parent / calibration.FILE_NAME
    warnings = calibration.warnings_for(rules, calibration.read(where), where)
    warnings += budget.shared_node_warnings(rules, frame)
    print(verdicts.terminal(decided, warnings))
    title = f"greenbench check: {budgets.name} on {', '.join(f.name for f in folders)}"
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as summary:
            summary.write(verdicts.markdown(decided, title, warnings))
    if junit:
        junit.write_text(verdicts.junit(decided, strict), encoding="utf-8")
    failing = {budget.FAIL, budget.INCONCLUSIVE} if strict else {budget.FAIL}
    return any(v.result in failing for v in decided)


def _numeric_column(column: pd.Series) -> bool:
    return bool(pd.to_numeric(column, errors="coerce").notna().any())


def _stored_results(path: Path) -> pd.DataFrame:
    try:
        stored = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise UserError(f"--baseline: {path} cannot be read as results ({error})") from None
    if "status" not in stored:
        raise UserError(f"--baseline: {path} is not a results file (no status column)")
    return stored
