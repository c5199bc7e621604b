"""The results store: one folder per sweep, one JSON record per run, every file written atomically.

::

    <output_dir>/<name>/
        sweep.yaml              the resolved sweep, rewritten when it changes
        records/<run_id>.json   one record per point of the sweep; nothing else lives here
        images/<run_id>.png     a grid of 64 images the point generated
        logs/<run_id>.log       everything the point's process printed
        plan.json               `greenbench plan`'s prediction of every point
        pilots/<run_id>.json    the records of its pilots (and their logs/, codecarbon/)
        .tmp/                   files being written, renamed into place once complete, and
                                the running points' handoff folders (.tmp/points/); cleared
                                when the next run opens the folder
        .tmp/pending/<run_id>/  a finished point's result that could not be stored (disk
                                full, folder read-only); the next run stores it, no retraining
        .lock                   held by the `greenbench run` using the folder

A file appears under its final name only once it is complete and on disk (written to ``.tmp/``,
fsynced, renamed), so an interrupted run, even one killed with SIGKILL, leaves whole records or
none. This module owns the layout: the parent (``greenbench.sweep.runner``) is the only process that
writes through it, the processes that train never do, and the readers (``greenbench.results``)
read records through ``read_records``, which checks each against the record schema and gives
it under the current schema's names (``records.upgraded``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from greenbench.errors import UserError
from greenbench.files import atomic_write
from greenbench.records import schema_problem, upgraded
from greenbench.yamlfile import load_yaml

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no lock, the rest works
    fcntl = None


PLAN_FILE = "plan.json"
PILOTS_FOLDER = "pilots"


class SweepStore:
    """Read and write the results folder of one sweep."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.records_dir = self.directory / "records"
        self._tmp_dir = self.directory / ".tmp"
        self.scratch_dir = self._tmp_dir / "points"  # where point processes hand results back
        self._pending_dir = self._tmp_dir / "pending"

    @contextmanager
    def open_for_writing(self) -> Iterator[SweepStore]:
        """Create the folders and hold the folder's lock while a run writes to it."""
        try:
            for folder in (self.directory, self.records_dir, self._tmp_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{self.directory}: cannot create the results folder "
                            f"({e.strerror})") from None
        with open(self.directory / ".lock", "w") as lock:
            if fcntl is not None:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise UserError(
                        f"{self.directory}: another greenbench run is writing to this folder"
                    ) from None
            _clear(self._tmp_dir, keep=self._pending_dir)  # leftovers of a killed run
            yield self

    def read_records(self) -> tuple[dict[str, dict[str, Any]], list[tuple[Path, str]]]:
        """Records by run_id, and the files in ``records/`` that are not records, each with why
        (unreadable, not JSON, not a record of the supported schema, named for another run)."""
        records: dict[str, dict[str, Any]] = {}
        unreadable: list[tuple[Path, str]] = []
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                unreadable.append((path, f"not readable as JSON ({type(error).__name__})"))
                continue
            problem = schema_problem(record)
            if problem is None and record["run_id"] != path.stem:
                problem = f"holds the record of run {record['run_id']!r}"
            if problem is None:
                records[path.stem] = upgraded(record)
            else:
                unreadable.append((path, problem))
        return records, unreadable

    def description(self) -> tuple[str, str]:
        """(name, description) from the folder's resolved ``sweep.yaml``."""
        try:  # the loader's limits (size, aliases, depth) hold here too
            content = load_yaml(self.directory / "sweep.yaml")
        except UserError:
            content = None
        content = content if isinstance(content, dict) else {}
        name, description = content.get("name"), content.get("description")
        return (name if isinstance(name, str) else self.directory.name,
                description if isinstance(description, str) else "")

    def write_result(self, run_id: str, record: str, files: dict[str, bytes]) -> None:
        """Store a point: its files first, its record last, so that a record's presence means
        its point is complete. ``files`` are keyed ``<folder>/<name>``."""
        for relative, content in files.items():
            folder, name = relative.split("/", 1)
            self.write_file(folder, name, content)
        self.write_record(run_id, record)

    def keep_pending(self, run_id: str, record: str, files: dict[str, bytes]) -> Path:
        """Set a result aside under ``.tmp/pending/<run_id>/`` when it cannot be stored; the
        next run stores it (``store_pending``). Raises OSError when even that fails."""
        folder = self._pending_dir / run_id
        for relative, content in files.items():
            target = folder / "files" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        atomic_write(folder / "record.json", record.encode(), folder)
        return folder

    def store_pending(self) -> list[str]:
        """Store the results a previous run set aside; returns their run_ids."""
        stored = []
        for folder in sorted(self._pending_dir.glob("*/")):
            record = folder / "record.json"
            if not record.is_file():  # set aside only in part: the point runs again
                shutil.rmtree(folder, ignore_errors=True)
                continue
            files = {path.relative_to(folder / "files").as_posix(): path.read_bytes()
                     for path in sorted((folder / "files").rglob("*")) if path.is_file()}
            self.write_result(folder.name, record.read_text(encoding="utf-8"), files)
            shutil.rmtree(folder, ignore_errors=True)
            stored.append(folder.name)
        return stored

    def write_record(self, run_id: str, content: str) -> Path:
        """Write a serialised record as ``records/<run_id>.json``."""
        return self.write_file("records", f"{run_id}.json", content.encode())

    def write_file(self, folder: str, name: str, content: bytes) -> Path:
        """Write ``<folder>/<name>`` inside the sweep folder, atomically."""
        target = self.directory / folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, content, self._tmp_dir)
        return target

    def write_sweep(self, text: str) -> bool:
        """Keep ``sweep.yaml`` equal to the resolved sweep; True when it was (re)written."""
        path = self.directory / "sweep.yaml"
        if path.exists() and path.read_text(encoding="utf-8") == text:
            return False
        atomic_write(path, text.encode(), self._tmp_dir)
        return True


def sweep_folders(paths: Iterable[str | Path], output_dir: str | Path = "runs") -> list[Path]:
    """The sweep folders to read: ``paths`` as given, or the most recently modified sweep under
    ``output_dir`` when none is given. Every folder must hold at least one record file."""
    folders = [Path(p) for p in paths] or [_latest_sweep(Path(output_dir))]
    for folder in folders:
        records = SweepStore(folder).records_dir
        if not records.is_dir():
            raise UserError(f"{folder}: not a sweep folder (no records/ in it)")
        if not any(records.glob("*.json")):
            raise UserError(f"{folder}: no records yet (run the sweep first)")
    return folders


def _latest_sweep(output_dir: Path) -> Path:
    candidates = [p.parent for p in output_dir.glob("*/records") if p.is_dir()]
    if not candidates:
        raise UserError(f"{output_dir}: no sweep results here; run `greenbench run SWEEP.yaml` "
                        "first or name a sweep folder")
    return max(candidates, key=lambda folder: (folder / "records").stat().st_mtime)


def _clear(folder: Path, keep: Path | None = None) -> None:
    for entry in folder.iterdir():
        if entry == keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
