"""Writing a file so that readers see the old content or the new, never half of either."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()  # what open() would give: mkstemp's 0600 would hide shared files


def atomic_write(target: Path, content: bytes, tmp_dir: Path | None = None) -> None:
    """Write ``content`` to ``target``: a temporary file, fsync, rename, fsync of the folder.

    ``tmp_dir`` (default: the target's folder) must be on the same file system as ``target``,
    so that the rename does not copy. A write interrupted at any point leaves ``target`` as it
    was; at worst a temporary file remains in ``tmp_dir``.
    """
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or target.parent, prefix=f".{target.name}.")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename into ``directory`` reach the disk, or a power cut can lose the file."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - directories cannot be opened on some systems
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
