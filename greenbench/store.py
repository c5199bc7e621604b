"""The results store: one folder per sweep, one JSON record per run, every file written atomically.

::

    <output_dir>/<name>/
        sweep.yaml              the resolved sweep, rewritten when it changes
        records/<run_id>.json   one record per point of the sweep; nothing else lives here
        samples/<run_id>.png    a grid of the point's generated samples
        logs/<run_id>.log       everything the point's process printed
        .tmp/                   files being written, renamed into place once complete
        .lock                   held by the `greenbench run` using the folder

A file appears under its final name only once it is complete and on disk (written to ``.tmp/``,
fsynced, renamed), so an interrupted run, even one killed with SIGKILL, leaves whole records or
none. Only the parent process writes here; the processes that train never do.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from greenbench.errors import UserError
from greenbench.files import atomic_write

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no lock, the rest works
    fcntl = None


class SweepStore:
    """Read and write the results folder of one sweep."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.records_dir = self.directory / "records"
        self._tmp_dir = self.directory / ".tmp"

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
            _clear(self._tmp_dir)  # leftovers of a run that was killed mid-write
            yield self

    def read_records(self) -> tuple[dict[str, dict[str, Any]], list[Path]]:
        """Records by run_id, and the record files that could not be read as records."""
        records: dict[str, dict[str, Any]] = {}
        unreadable: list[Path] = []
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                unreadable.append(path)
                continue
            if isinstance(record, dict) and record.get("run_id") == path.stem:
                records[path.stem] = record
            else:
                unreadable.append(path)
        return records, unreadable

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


def _clear(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
