"""The first thing to run when a GPU is lent: a few minutes that show whether greenbench's GPU
measurements hold on it, before anything longer is spent.

    python benchmarks/gpu/first_contact.py            # reports/gpu-first-contact-<gpu>.md
    python benchmarks/gpu/first_contact.py --limit 240 --out /tmp/fc

Four sections, each in a process of its own with a time limit, inside one limit for the whole
script (``--limit``, default 300 s):

1. ``device`` (60 s): the GPU as torch and NVML name it, its MIG mode, the compute processes on
   it, which power readings and energy counter it offers, and how ``NvmlMeter`` measures it;
2. ``fork`` (90 s): the warm fork server's imports, then a forked point that opens NVML and
   reads the energy counter for 2 s;
3. ``trace`` (60 s): power (averaged and instantaneous) and the counter logged at 50 Hz across
   3 s idle, 5 s of matrix products and 4 s idle: each reading's lag at the two steps, the
   counter's period, and what each integrates to (over the trace, and over the first second of
   the load, as a short warm-up window would);
4. ``validation`` (what is left): ``validate.py --quick --skip quickstart`` with the time left
   (less 20 s) as its budget; its own report lands beside this one.

Writes ``gpu-first-contact-<gpu>.md``, ``.json`` (everything, the trace's rows included) and
``.trace.csv`` into ``--out`` (``reports/`` by default). Without a CUDA GPU it exits 2 with one
line and writes nothing. Exit 1 when a section failed or ran out of time. ``docs/gpu.md`` says
what each figure means.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run by path: this checkout

import argparse
import csv
import faulthandler
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from benchmarks.gpu import report
from benchmarks.gpu.common import REPORTS, gpu_missing, slugify
from benchmarks.sweep_runs import child_environment

SCRIPT = Path(__file__).resolve()
VALIDATE = SCRIPT.parent / "validate.py"
LIMIT_S = 300.0
SECTION_LIMITS_S = {"device": 60.0, "fork": 90.0, "trace": 60.0}
MIN_VALIDATION_S = 60.0  # less than this left: the validation is not started
RESERVE_S = 10.0  # kept back for writing the report
VALIDATION_GRACE_S = 20.0  # what validate.py may overrun its budget by before it is stopped


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="first_contact.py",
        description="The first check to run on a lent GPU (a few minutes); writes "
                    "reports/gpu-first-contact-<gpu>.md. Needs a CUDA GPU (exit 2 without).")
    parser.add_argument("--out", type=Path, default=REPORTS, metavar="DIR",
                        help=f"where the report goes (default: {REPORTS})")
    parser.add_argument("--limit", type=float, default=LIMIT_S, metavar="SECONDS",
                        help=f"the whole script's time limit (default: {LIMIT_S:.0f})")
    parser.add_argument("--section", choices=sorted(SECTION_LIMITS_S), help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.limit > 0:
        parser.error("--limit: a number of seconds above 0")
    return args


def run_section(name: str, device: str | None, result: Path) -> int:
    """In the section's own process: run it and write what it found to ``result``."""
    from benchmarks.gpu.contact import SECTIONS

    spec: int | str | None = device
    if isinstance(device, str) and device.isdigit():
        spec = int(device)
    found = SECTIONS[name](spec)
    result.write_text(json.dumps(found, default=str))
    return 0


def in_process(command: list[str], timeout_s: float, log: Path) -> tuple[str, str | None]:
    """Run ``command`` in a new session with its output in ``log``; (status, reason): ``ok``,
    ``failed`` (the exit status and its last line of output) or ``timed out`` (the whole
    session is killed)."""
    with open(log, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=child_environment(),
                                   start_new_session=True)
        try:
            code = process.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return "timed out", f"stopped after {timeout_s:.0f} s"
        finally:
            if process.poll() is None:  # interrupted here
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    if code == 0:
        return "ok", None
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return "failed", f"exit {code}" + (f": {lines[-1].strip()[:300]}" if lines else "")


def run(args: argparse.Namespace, argv: list[str],
        runner: Callable[[list[str], float, Path], tuple[str, str | None]] = in_process,
        clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Every section in order, each under min(its limit, what is left of ``--limit``)."""
    began = clock()
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/gpu/first_contact.py", *argv]),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "limit_s": args.limit, "sections": {}}
    work = Path(tempfile.mkdtemp(prefix="greenbench-first-contact-"))
    device: str | None = None
    for name, limit in [*SECTION_LIMITS_S.items(), ("validation", None)]:
        left = args.limit - (clock() - began) - RESERVE_S
        if limit is None:  # the validation: all that is left, within its own budget's grace
            budget = left - VALIDATION_GRACE_S
            if budget < MIN_VALIDATION_S:
                result["sections"][name] = {"status": "skipped", "reason": (
                    f"{max(left, 0):.0f} s left; the quick validation needs at least "
                    f"{MIN_VALIDATION_S + VALIDATION_GRACE_S:.0f} s")}
                continue
            command = [sys.executable, str(VALIDATE), "--quick", "--skip", "quickstart",
                       "--budget", f"{budget:.0f}", "--out", str(args.out)]
            timeout = left
        else:
            if left < 5:
                result["sections"][name] = {"status": "skipped", "reason": "no time left"}
                continue
            timeout = min(limit, left)
            command = [sys.executable, str(SCRIPT), "--section", name,
                       "--result", str(work / f"{name}.json")]
            if device is not None:
                command += ["--device", device]
        print(f"[first-contact] {name} (at most {timeout:.0f} s)", flush=True)
        started = clock()
        status, reason = runner(command, timeout, work / f"{name}.log")
        entry: dict[str, Any] = {"status": status, "reason": reason,
                                 "elapsed_s": round(clock() - started, 1)}
        found = work / f"{name}.json"
        if status == "ok" and name != "validation":
            entry.update(json.loads(found.read_text()))
        if name == "device" and status == "ok":
            device = str(entry.get("nvml_device"))
        if name == "validation":
            entry.update(_validation_summary(args.out))
        result["sections"][name] = entry
        print(f"[first-contact] {name}: {status}" + (f" ({reason})" if reason else ""),
              flush=True)
    result["total_s"] = round(clock() - began, 1)
    return result


def _validation_summary(out: Path) -> dict[str, Any]:
    """The quick validation's report name and each section's outcome, from its JSON."""
    found = sorted(out.glob("gpu-validation-*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        return {"report": None, "outcomes": {}}
    data = json.loads(found[-1].read_text())
    return {"report": found[-1].with_suffix(".md").name,
            "outcomes": {name: {"status": s["status"], "reason": s.get("reason")}
                         for name, s in data.get("sections", {}).items()}}


def write(result: dict[str, Any], out: Path) -> Path:
    """The report, its JSON and the trace's rows as CSV; the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    name = (result["sections"].get("device") or {}).get("torch_name")
    path = out / f"gpu-first-contact-{slugify(name)}.md"
    path.write_text(report.render(result))
    path.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    rows = (result["sections"].get("trace") or {}).get("rows") or []
    if rows:
        with open(path.with_suffix(".trace.csv"), "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.section:
        return run_section(args.section, args.device, args.result)
    missing = gpu_missing()
    if missing:
        print(f"first_contact: {missing}; nothing was run and no report written",
              file=sys.stderr)
        return 2
    faulthandler.dump_traceback_later(args.limit + 30, exit=True)  # the last word on time
    try:
        result = run(args, argv)
    finally:
        faulthandler.cancel_dump_traceback_later()
    path = write(result, args.out)
    bad = [n for n, s in result["sections"].items() if s["status"] in ("failed", "timed out")]
    print(f"wrote {path} in {result['total_s']:.1f} s"
          + (f"; not completed: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
