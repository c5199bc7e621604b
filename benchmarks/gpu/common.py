"""What the GPU checks share: where reports go, the GPU check, the device as NVML names it, the
settings and state the validation's sections share, time limits, and how figures are printed
(a missing figure is "n/a", never a number of the report's own)."""

from __future__ import annotations

import math
import re
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "reports"


@dataclass(frozen=True)
class Settings:
    mode: str
    idle_s: float  # nvml_counter: the idle window
    short_s: float  # nvml_counter: the short window of matrix products
    long_s: float  # nvml_counter: the long window
    overhead_rounds: int  # callback_overhead: A/B/C rounds (fewer if its time runs out)
    steps: int  # precisions: training batches per point


FULL = Settings("full", idle_s=5.0, short_s=1.0, long_s=30.0, overhead_rounds=10, steps=500)
QUICK = Settings("quick", idle_s=2.0, short_s=1.0, long_s=12.0, overhead_rounds=3, steps=100)


@dataclass
class Context:
    """What the validation's sections share: the settings, the clock, the GPU, and what earlier
    sections left for later ones (the precision sweep's records, for ``flops``)."""

    settings: Settings
    started: float
    budget_s: float
    time_limit_s: float = 0.0  # how long the running section may take
    device: int | str = 0  # the GPU as NvmlMeter takes it: torch's UUID for cuda:0
    gpu_name: str | None = None
    power_limit_w: float | None = None
    cudnn_tf32: bool | None = None
    records: list[dict] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def gpu_missing() -> str | None:
    """Why this machine cannot run the checks (no CUDA GPU), or None when it can."""
    try:
        import torch
    except ImportError:
        return "no CUDA GPU: torch is not installed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when it finds a driver but no device
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            return f"no CUDA GPU: torch {torch.__version__} sees none"
    return None


def cuda0() -> int | str:
    """cuda:0 as NvmlMeter takes it: its UUID where torch gives one (exact whatever the device
    order), else its index."""
    import torch

    from greenbench.energy.callback import nvml_device

    return nvml_device(torch.device("cuda", 0))


def slugify(name: str | None) -> str:
    """A GPU name as a file-name part: lower case, runs of anything else than letters and
    digits as one '-' ("NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3")."""
    slug = re.sub(r"[^a-z0-9]+", "-", (name or "").lower()).strip("-")
    return slug or "unknown-gpu"


class SectionTimeout(Exception):
    """A section ran past its time limit."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``SectionTimeout`` in the main thread once ``seconds`` have passed (SIGALRM: a
    blocking call returns first, and a GPU call returns within one chunk of work)."""

    def expire(signum: int, frame: Any) -> None:
        raise SectionTimeout(f"timed out after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1]}" if text else type(error).__name__


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def num(value: Any, digits: int) -> str:
    if value is None or isinstance(value, bool):
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def pct(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def text(value: Any, missing: str = "unknown") -> str:
    return missing if value is None else str(value).replace("|", "/")


def status(entry: dict[str, Any]) -> str:
    """A section's outcome as the report shows it."""
    if entry["status"] == "ok":
        return "ok"
    if entry["status"] == "failed":
        return f"not run: failed ({entry['reason']})"
    return f"not run: {entry['reason']}"
