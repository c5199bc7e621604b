"""How long the test suite takes, and how much of greenbench it covers, at two commits.

    python benchmarks/test_suite.py --before REV [--after HEAD] [--out reports/test-suite.md]

Each commit is checked out into a temporary worktree and its suite is run from there with this
interpreter (its ``greenbench`` first on the import path, so point processes the tests start
import that commit's code too): once timed, with ``--durations=15``, and once with line
coverage of ``greenbench/`` (pytest-cov). The two commits' suites run one after the other on
the same machine in one session, so their ratio holds where their absolute times would not.
Each suite runs as its commit configures it (the later one on both cores with pytest-xdist).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: this checkout

import argparse
import json
import os
import re
import subprocess
import tempfile
import time

from benchmarks.sweep_runs import ROOT, describe_machine


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def run_suite(tree: Path, *extra: str) -> tuple[float, int, str]:
    """(wall seconds, exit code, the output's tail) of ``python -m pytest`` in ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *extra],
                          cwd=tree, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode, done.stdout[-20000:]


def durations(output: str) -> list[str]:
    """The ``--durations`` lines of a pytest output."""
    block = output.split("slowest 15 durations", 1)[-1]
    return re.findall(r"^\d+\.\d+s \w+ +\S+$", block, flags=re.MULTILINE)[:15]


def failures(output: str) -> list[str]:
    """The tests a pytest output names as failed."""
    return re.findall(r"^FAILED (\S+)", output, flags=re.MULTILINE)


def summary(output: str) -> str:
    lines = [line for line in output.splitlines() if re.search(r"\d+ passed", line)]
    return lines[-1].strip("= ") if lines else "(no summary line)"


def measure(rev: str, work: Path) -> dict:
    tree = work / rev.replace("/", "_")
    git("worktree", "add", "--detach", str(tree), rev)
    try:
        wall_s, code, output = run_suite(tree, "--durations=15")
        coverage_file = tree / "coverage.json"
        _, cov_code, cov_output = run_suite(
            tree, "--cov=greenbench", f"--cov-report=json:{coverage_file}", "-q")
        covered = json.loads(coverage_file.read_text())["totals"] if coverage_file.exists() \
            else None
    finally:
        git("worktree", "remove", "--force", str(tree))
    return {"rev": rev, "sha": git("rev-parse", "--short", rev), "wall_s": wall_s,
            "exit": code, "summary": summary(output), "failed": failures(output),
            "durations": durations(output),
            "coverage_exit": cov_code, "coverage_summary": summary(cov_output),
            "coverage": covered}


def render(before: dict, after: dict) -> str:
    ratio = after["wall_s"] / before["wall_s"]
    lines = [
        "# Test suite: wall time and coverage, before and after",
        "",
        f"`benchmarks/test_suite.py`. {describe_machine()} Both commits' suites ran one after "
        "the other in one session, each as its commit configures it, with the same "
        "interpreter and packages.",
        "",
        "| | commit | tests | wall time | line coverage of greenbench/ |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for name, run in (("before", before), ("after", after)):
        totals = run["coverage"] or {}
        covered = (f"{totals['percent_covered']:.1f} % ({totals['covered_lines']} of "
                   f"{totals['num_statements']} lines)" if totals else "not measured")
        lines.append(f"| {name} | {run['sha']} | {run['summary']} (exit {run['exit']}) | "
                     f"{run['wall_s'] / 60:.1f} min ({run['wall_s']:.0f} s) | {covered} |")
    lines += ["", f"After over before: **{ratio:.2f}** of the wall time.", ""]
    for name, run in (("before", before), ("after", after)):
        if run.get("failed"):
            lines += [f"Failed {name}: " + ", ".join(f"`{test}`" for test in run["failed"]), ""]
    for name, run in (("before", before), ("after", after)):
        lines += [f"## The 15 slowest tests {name} ({run['sha']})", "", "```",
                  *run["durations"], "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier commit")
    parser.add_argument("--after", default="HEAD", help="the later commit (default HEAD)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "test-suite.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="greenbench-suite-") as tmp:
        before = measure(args.before, Path(tmp))
        after = measure(args.after, Path(tmp))
    args.out.write_text(render(before, after) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"before": before, "after": after}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if before["exit"] == after["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
