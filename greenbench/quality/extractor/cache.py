"""The extractor cache: ``<cache_dir>/extractors/<id>.pt`` and ``<id>.json``, built under a lock,
written atomically, checked against its sha256 on every load."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from greenbench.files import atomic_write
from greenbench.quality.extractor.hashing import weights_sha256
from greenbench.quality.extractor.network import Extractor, FeatureExtractor
from greenbench.quality.extractor.recipe import RECIPE, isolated_from_caller

try:  # POSIX only; elsewhere the atomic renames alone keep the cache consistent.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("greenbench.quality.extractor")

#: Environment variable that overrides the default cache folder.
CACHE_ENV = "GREENBENCH_CACHE"


def cache_dir() -> Path:
    """The cache folder: ``$GREENBENCH_CACHE`` if set (and not empty), else ~/.cache/greenbench."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "greenbench"


@dataclass(frozen=True)
class CacheEntry:
    folder: Path
    id: str

    @property
    def weights(self) -> Path:
        return self.folder / f"{self.id}.pt"

    @property
    def metadata(self) -> Path:
        return self.folder / f"{self.id}.json"

    @property
    def lock(self) -> Path:
        return self.folder / f"{self.id}.lock"


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; on failure warn and go on without it."""
    descriptor: int | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Read-only is enough for flock, and works in a shared cache that is not ours.
        descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
    except OSError as error:
        log.warning("cannot lock the extractor cache (%s); going on without the lock", error)
        if descriptor is not None:
            os.close(descriptor)
            descriptor = None
    try:
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)  # releases the lock


def load(entry: CacheEntry, spec: Mapping[str, Any]) -> Extractor | None:
    """The cached extractor, or None when the entry is missing or cannot be trusted."""
    if not entry.metadata.is_file():
        return None
    try:
        metadata = json.loads(entry.metadata.read_text(encoding="utf-8"))
        for key, expected in spec.items():
            if metadata.get(key) != expected:
                raise ValueError(f"{key} is {metadata.get(key)!r}, expected {expected!r}")
        accuracy = float(metadata["accuracy"])
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy {accuracy} is not in [0, 1]")
        with isolated_from_caller():
            state = torch.load(entry.weights, map_location="cpu", weights_only=True)
            module = FeatureExtractor(spec["channels"], spec["image_size"], spec["num_classes"])
            module.load_state_dict(state)
        sha256 = weights_sha256(module.state_dict())
        if sha256 != metadata["sha256"]:
            raise ValueError("the weights do not match the sha256 in the JSON file")
    except Exception as error:  # anything wrong with an entry means: rebuild it
        log.warning(
            "ignoring the extractor cache entry %s (%s: %s); rebuilding it",
            entry.weights, type(error).__name__, error,
        )
        return None
    return Extractor(
        module=module.freeze(),
        id=entry.id,
        sha256=sha256,
        accuracy=accuracy,
        recipe=copy.deepcopy(RECIPE),
    )


def save(entry: CacheEntry, extractor: Extractor, spec: Mapping[str, Any]) -> None:
    """Write the entry (weights first, JSON last); warn instead of failing."""
    metadata = {
        "id": extractor.id,
        **spec,
        "sha256": extractor.sha256,
        "accuracy": extractor.accuracy,
        "torch": torch.__version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    state = extractor.module.state_dict()
    try:
        entry.folder.mkdir(parents=True, exist_ok=True)
        entry.metadata.unlink(missing_ok=True)  # a stale JSON must not vouch for new weights
        weights = io.BytesIO()
        torch.save(state, weights)
        atomic_write(entry.weights, weights.getvalue())
        atomic_write(entry.metadata, text.encode("utf-8"))
    except (OSError, RuntimeError) as error:
        log.warning(
            "cannot write the extractor cache entry %s (%s); using it from memory only",
            entry.metadata, error,
        )
