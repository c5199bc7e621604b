"""What a run ran on: interpreter, library versions, machine, accelerator, source revision."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any


def describe(accelerator: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """The environment section of a record; ``accelerator`` (``cpu``, ``cuda``, ...) and
    ``device_name`` say what a run trained on (the point process knows; ``device_name``
    defaults to the CPU's name on a CPU). Imports no torch."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "lightning": _version("lightning"),
        "greenbench": _version("greenbench"),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "accelerator": None,
        "device_name": None,
        "git_sha": None,
        "git_dirty": None,
    }
    info["git_sha"], info["git_dirty"] = git_revision()
    if accelerator is not None:
        info["accelerator"] = accelerator
        info["device_name"] = device_name or (cpu_name() if accelerator == "cpu" else accelerator)
    return info


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def git_revision() -> tuple[str | None, bool | None]:
    """The commit greenbench's own source was checked out at, when it runs from a checkout."""
    package = Path(__file__).resolve().parent
    try:
        top = _git(package, "rev-parse", "--show-toplevel")
        if Path(top).resolve() != package.parent:
            return None, None  # installed somewhere that merely lies inside another repository
        sha = _git(package, "rev-parse", "HEAD")
        dirty = bool(_git(package, "status", "--porcelain", "--", str(package)))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return sha, dirty


def _git(where: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(where), *args], capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout.strip()

