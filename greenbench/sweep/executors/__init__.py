"""Executors run points and hand back their results; the runner alone stores them.

An executor has one method, ``run_all(specs, progress)``, that yields ``(spec, result)`` pairs
as points finish. ``LocalExecutor`` (``local``) runs each point in a fresh process on this
machine; ``RayExecutor`` (``ray``, the ``ray`` extra) runs the same point processes as Ray tasks
across a cluster. ``make_executor`` picks one from the sweep's ``executor`` section.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from greenbench.errors import UserError
from greenbench.records import PointResult, RunSpec
from greenbench.sweep.executors.local import LocalExecutor
from greenbench.sweep.progress import SweepProgress
from greenbench.sweep.schema import ExecutorSection

__all__ = ["Executor", "LocalExecutor", "make_executor"]


class Executor(Protocol):
    name: str

    def run_all(
        self, specs: list[RunSpec], progress: SweepProgress
    ) -> Iterator[tuple[RunSpec, PointResult]]: ...


def make_executor(settings: ExecutorSection, scratch_dir: Path | None = None) -> Executor:
    """The executor a sweep asks for: local, or Ray when the ``ray`` extra is installed.
    ``scratch_dir`` holds the local executor's handoff folders (the store's ``scratch_dir``)."""
    if settings.kind == "local":
        return LocalExecutor(scratch_dir=scratch_dir, warm=settings.start == "warm")
    try:
        from greenbench.sweep.executors.ray import RayExecutor
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] != "ray":
            raise
        raise UserError(
            "executor: ray needs Ray, which is not installed: pip install 'greenbench[ray]'"
        ) from None
    return RayExecutor(settings)
