"""What only a GPU can check, in one command and under 8 minutes: a report per GPU model.

On an NVIDIA GPU this runs six sections, each timed, each catching its own failure, and writes
``reports/gpu-validation-<gpu name, slugified>.md`` (and the same result as ``.json``):

* ``nvml`` (``nvml_counter.py``): NVML's energy counter against the integral of sampled power;
* ``overhead`` (``callback_overhead.py``): what ``EnergyCallback`` adds to a training step;
* ``precisions`` (``precisions.py``): every CUDA precision for the GAN and the VAE, as sweep
  points;
* ``flops`` (``flops.py``): achieved FLOP per joule against the device's published peak;
* ``quickstart`` (``quickstart.py``): the wall time of the quickstart sweep from a cold start;
* ``multigpu`` (``multi_gpu.py``): a point on one GPU against the same point on two (DDP), on a
  machine with two or more GPUs (elsewhere it says it was skipped).

Where no CUDA GPU is present it refuses in one line and exits 2. Every section runs under a time
limit (its share of what is left of ``--budget``), and the whole script stops hard 90 s past
the budget. A section that fails, is skipped, times out or would not fit in the time left says
so in the report ("not run: <reason>"): no figure is ever invented. Exit 1 when a section
failed, else 0. Everything but the sections' GPU work is tested on a CPU in
``tests/test_gpu_validation.py``.

    python benchmarks/gpu/validate.py                 # reports/gpu-validation-<gpu>.md
    python benchmarks/gpu/validate.py --quick --out /tmp/gv --skip quickstart
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run by path: this checkout

import argparse
import faulthandler
import json
import os
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from benchmarks.gpu import (
    callback_overhead,
    flops,
    multi_gpu,
    nvml_counter,
    precisions,
    quickstart,
)
from benchmarks.gpu.common import (
    FULL,
    QUICK,
    REPORTS,
    Context,
    SectionTimeout,
    cuda0,
    gpu_missing,
    num,
    one_line,
    slugify,
    status,
    text,
    time_limit,
)

BUDGET_S = 480.0  # the whole command, every section included, unless --budget says otherwise
SECTION_GRACE_S = 15.0  # a section is stopped this long after its time limit
SCRIPT_GRACE_S = 90.0  # the whole process is ended this long after the budget


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    run: Callable[[Context], dict[str, Any]]
    render: Callable[[dict[str, Any]], list[str]]
    estimate_s: dict[str, float]  # by settings mode: what it takes on an H100-class GPU
    needs: tuple[str, ...] = ()  # sections whose results it reads


SECTIONS = (
    Section("nvml", "NVML energy counter against sampled power", nvml_counter.check,
            nvml_counter.render, {"full": 50, "quick": 22}),
    Section("overhead", "EnergyCallback overhead on the GPU", callback_overhead.check,
            callback_overhead.render, {"full": 90, "quick": 35}),
    Section("precisions", "Every precision on CUDA: GAN and VAE", precisions.check,
            precisions.render, {"full": 160, "quick": 110}),
    Section("flops", "Achieved FLOP per joule against the peak", flops.check, flops.render,
            {"full": 1, "quick": 1}, needs=("precisions",)),
    Section("quickstart", "Quickstart wall time", quickstart.check, quickstart.render,
            {"full": 100, "quick": 100}),
    Section("multigpu", "One GPU against two (DDP)", multi_gpu.check, multi_gpu.render,
            {"full": 45, "quick": 40}),
)
SECTION_NAMES = tuple(s.name for s in SECTIONS)


def run_sections(ctx: Context, skip: list[str]) -> dict[str, dict[str, Any]]:
    """Every section in order, each timed, limited and caught; what each did, by name."""
    mode = ctx.settings.mode
    done: dict[str, dict[str, Any]] = {}
    for i, section in enumerate(SECTIONS):
        estimate = section.estimate_s[mode]
        later = sum(s.estimate_s[mode] for s in SECTIONS[i + 1:] if s.name not in skip)
        left = ctx.budget_s - ctx.elapsed()
        unmet = [n for n in section.needs if done.get(n, {}).get("status") != "ok"]
        if section.name in skip:
            done[section.name] = {"status": "skipped", "reason": "skipped with --skip"}
        elif unmet:
            done[section.name] = {"status": "skipped", "reason": (
                f"needs the {', '.join(unmet)} section, which did not run to completion")}
        elif estimate > left:
            done[section.name] = {"status": "skipped", "reason": (
                f"{left:.0f} s of the {ctx.budget_s:.0f} s budget left; it needs about "
                f"{estimate:.0f} s")}
        else:
            ctx.time_limit_s = min(left, max(estimate, left - later))
            print(f"[gpu-validation] {section.name}: {section.title} (about {estimate:.0f} s, "
                  f"at most {ctx.time_limit_s:.0f} s)", flush=True)
            began = time.perf_counter()
            try:
                with time_limit(ctx.time_limit_s + SECTION_GRACE_S):
                    done[section.name] = {"status": "ok", **section.run(ctx)}
            except SectionTimeout as error:
                done[section.name] = {"status": "failed", "reason": str(error)}
            except Exception as error:  # a section's failure is its outcome, reported
                traceback.print_exc()
                done[section.name] = {"status": "failed", "reason": one_line(error)}
            done[section.name]["elapsed_s"] = round(time.perf_counter() - began, 1)
        entry = done[section.name]
        print(f"[gpu-validation] {section.name}: {entry['status']}"
              + (f" in {entry['elapsed_s']:.1f} s" if "elapsed_s" in entry else "")
              + (f" ({entry['reason']})" if entry.get("reason") else "")
              + f"; {ctx.elapsed():.1f} s of {ctx.budget_s:.0f} s", flush=True)
    return done


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="validate.py",
        description="Run the checks only a GPU can make; write "
                    "reports/gpu-validation-<gpu>.md. Needs one CUDA GPU (exit 2 without).")
    parser.add_argument("--out", type=Path, default=REPORTS, metavar="DIR",
                        help=f"where the report goes (default: {REPORTS})")
    parser.add_argument("--quick", action="store_true",
                        help="shorter windows, fewer rounds, fewer training steps")
    parser.add_argument("--skip", action="append", default=[], metavar="NAME[,NAME]",
                        help=f"sections not to run, of: {', '.join(SECTION_NAMES)} "
                             "(repeatable, or comma-separated)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, metavar="SECONDS",
                        help=f"the time for every section together (default: {BUDGET_S:.0f})")
    args = parser.parse_args(argv)
    skip = [name.strip() for value in args.skip for name in value.split(",") if name.strip()]
    unknown = [name for name in skip if name not in SECTION_NAMES]
    if unknown:
        parser.error(f"--skip: no section {', '.join(map(repr, unknown))}; "
                     f"the sections are {', '.join(SECTION_NAMES)}")
    if not args.budget > 0:
        parser.error("--budget: a number of seconds above 0")
    args.skip = list(dict.fromkeys(skip))
    return args


def describe(ctx: Context, argv: list[str]) -> dict[str, Any]:
    """The report's header: machine, GPU (torch and NVML), versions, commit. What cannot be read
    is None (the report says "unknown")."""
    import torch

    from greenbench import environment
    from greenbench.energy.nvml import NvmlMeter

    ctx.device = cuda0()
    name = torch.cuda.get_device_name(0)
    env = environment.describe("cuda", name)
    props = torch.cuda.get_device_properties(0)
    gpu: dict[str, Any] = {
        "name": name, "count": torch.cuda.device_count(), "device": str(ctx.device),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}", "driver": None, "power_limit_w": None,
        "energy_source": None, "power_reading": None, "scope": None, "nvml_unavailable": None,
    }
    try:
        meter = NvmlMeter([ctx.device], sample_hz=nvml_counter.SAMPLE_HZ)
        meter.start()
        details = meter.details()
        meter.stop()
        gpu["driver"], gpu["nvml_unavailable"] = details["driver_version"], details["unavailable"]
        gpu["power_reading"], gpu["scope"] = details["power_reading"], details["scope"]
        if details["devices"]:
            device = details["devices"][0]
            gpu["power_limit_w"], gpu["energy_source"] = device["power_limit_w"], device["source"]
    except Exception as error:  # the header is not worth failing the run for
        gpu["nvml_unavailable"] = one_line(error)
    ctx.gpu_name, ctx.power_limit_w = name, gpu["power_limit_w"]
    ctx.cudnn_tf32 = bool(torch.backends.cudnn.allow_tf32)
    return {
        "command": " ".join(["python", "benchmarks/gpu/validate.py", *argv]),
        "mode": ctx.settings.mode, "settings": asdict(ctx.settings),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "budget_s": ctx.budget_s,
        "machine": {"hostname": env["hostname"], "cpu": env["cpu"], "cores": os.cpu_count(),
                    "platform": platform.platform()},
        "gpu": gpu,
        "versions": {"python": env["python"], "torch": env["torch"],
                     "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                     "lightning": env["lightning"], "greenbench": env["greenbench"]},
        "commit": env["git_sha"], "uncommitted_changes": env["git_dirty"],
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    missing = gpu_missing()
    if missing:
        print(f"validate: {missing}; nothing was run and no report written", file=sys.stderr)
        return 2
    faulthandler.dump_traceback_later(args.budget + SCRIPT_GRACE_S, exit=True)
    try:
        ctx = Context(QUICK if args.quick else FULL, started=time.perf_counter(),
                      budget_s=args.budget)
        result = describe(ctx, argv)
        result["sections"] = run_sections(ctx, args.skip)
    finally:
        faulthandler.cancel_dump_traceback_later()
    result["total_s"] = round(ctx.elapsed(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / f"gpu-validation-{slugify(result['gpu']['name'])}.md"
    report.write_text(render_report(result))
    report.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    failed = [n for n, s in result["sections"].items() if s["status"] == "failed"]
    print(f"wrote {report} in {result['total_s']:.1f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def render_report(result: dict[str, Any]) -> str:
    """The Markdown report of a result dict (as ``main`` builds it, or as read back from the
    JSON). It formats what is there and computes nothing: a missing figure is "n/a" or a
    section's "not run: <reason>", never a number of its own."""
    gpu, machine, versions = result["gpu"], result["machine"], result["versions"]
    sections = result.get("sections", {})
    dirty = " with uncommitted changes" if result.get("uncommitted_changes") else ""
    shared = f", scope {gpu['scope']}" if gpu.get("scope") else ""
    lines = [
        f"# GPU validation: {text(gpu.get('name'))}",
        "",
        f"`{result['command']}` ({result['mode']} mode), started {result['started_at']}: "
        f"{num(result.get('total_s'), 1)} s in all, against a budget of "
        f"{num(result['budget_s'], 0)} s.",
        "",
        f"GPU: {text(gpu.get('name'))} ({num(gpu.get('count'), 0)} visible, "
        f"{num(gpu.get('memory_gib'), 1)} GiB, compute capability {text(gpu.get('capability'))}"
        f"), driver {text(gpu.get('driver'))}, board power limit "
        f"{num(gpu.get('power_limit_w'), 1)} W (NVML, enforced), energy from "
        f"{text(gpu.get('energy_source'))}, power read {text(gpu.get('power_reading'))}{shared}"
        + (f" (NVML: {gpu['nvml_unavailable']})" if gpu.get("nvml_unavailable") else "") + ".",
        "",
        f"Machine: {text(machine.get('cpu'))}, {num(machine.get('cores'), 0)} cores, "
        f"{text(machine.get('platform'))}, host {text(machine.get('hostname'))}; Python "
        f"{text(versions.get('python'))}, torch {text(versions.get('torch'))} (CUDA "
        f"{text(versions.get('cuda'))}, cuDNN {text(versions.get('cudnn'))}), lightning "
        f"{text(versions.get('lightning'))}, greenbench {text(versions.get('greenbench'))}; "
        f"commit {text(result.get('commit'))}{dirty}.",
        "",
        "| section | status | seconds |",
        "|---|---|---:|",
    ]
    for section in SECTIONS:
        entry = sections.get(section.name, {"status": "skipped", "reason": "not in the result"})
        lines.append(f"| {section.title} | {status(entry)} | {num(entry.get('elapsed_s'), 1)} |")
    for section in SECTIONS:
        entry = sections.get(section.name, {"status": "skipped", "reason": "not in the result"})
        lines += ["", f"## {section.title}", ""]
        if entry["status"] == "ok":
            lines += section.render(entry)
        else:
            lines.append(f"{status(entry)}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
