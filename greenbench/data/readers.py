"""Dataset files in torchvision's on-disk layout, read and validated as numpy arrays.

Nothing is ever downloaded. Two formats are read:

* ``mnist`` and ``fashion-mnist``: IDX files in ``<root>/MNIST/raw/`` and
  ``<root>/FashionMNIST/raw/``, plain or gzipped (the plain file wins when both exist).
* ``cifar10``: the pickled python batches in ``<root>/cifar-10-batches-py/``, read with a
  restricted unpickler that only rebuilds numpy arrays.

``idx_sizes`` and ``cifar_sizes`` check a dataset folder and return its split sizes cheaply;
``load_idx`` and ``load_cifar`` return the raw pixels and labels as ``RawSplits``. Every problem
with a folder or a file is raised as a one-line ``UserError`` that names the path at fault.

This module needs only numpy and the standard library: no torch, no scikit-learn.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from greenbench.errors import UserError

__all__ = [
    "CIFAR_CHANNELS",
    "CIFAR_NATIVE_SIZE",
    "IDX_NATIVE_SIZE",
    "NUM_CLASSES",
    "RawSplits",
    "cifar_sizes",
    "idx_sizes",
    "layout_example",
    "load_cifar",
    "load_idx",
]

NUM_CLASSES = 10

# mnist / fashion-mnist: torchvision's folder names and the four IDX files, per split.
_IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_NATIVE_SIZE = 28
_IDX_UBYTE = 0x08
_GZIP_SUFFIX = ".gz"
_READ_CHUNK = 1 << 20

# cifar10: torchvision's folder name and the python batches, per split.
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_BATCHES = ("test_batch",)
CIFAR_NATIVE_SIZE = 32
CIFAR_CHANNELS = 3
_CIFAR_ROW_BYTES = CIFAR_CHANNELS * CIFAR_NATIVE_SIZE * CIFAR_NATIVE_SIZE

_UINT8_MAX = 255.0

# The only globals a pickled numpy array needs, across numpy 1 and 2 and pickle protocols
# 2 to 5 (``_codecs.encode`` appears when Python 3 writes bytes with protocol 2).
_PICKLE_ALLOWED = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


@dataclass(frozen=True)
class RawSplits:
    """Images as read from disk, ``(N, C, H, W)``, before scaling; labels as int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    max_value: float


# --------------------------------------------------------------------------- public API


def layout_example(name: str) -> str:
    """Where dataset ``name`` lives under a root, e.g. ``<root>/MNIST/raw/``."""
    if name == "cifar10":
        return f"<root>/{_CIFAR_FOLDER}/"
    return f"<root>/{_IDX_FOLDERS[name]}/raw/"


def idx_sizes(name: str, root: Path) -> tuple[int, int]:
    """Train and test sizes of ``mnist`` or ``fashion-mnist``, from IDX headers and lengths."""
    paths = _idx_paths(name, root)
    sizes = {split: _check_idx_pair(*paths[split], read_data=False)[0] for split in _IDX_FILES}
    return sizes["train"], sizes["test"]


def load_idx(name: str, root: Path) -> RawSplits:
    """Read and check both splits of ``mnist`` or ``fashion-mnist``."""
    paths = _idx_paths(name, root)
    _, train_images, train_labels = _check_idx_pair(*paths["train"], read_data=True)
    _, test_images, test_labels = _check_idx_pair(*paths["test"], read_data=True)
    assert train_images is not None and train_labels is not None
    assert test_images is not None and test_labels is not None
    return RawSplits(
        train_images=train_images[:, np.newaxis, :, :],
        train_labels=train_labels.astype(np.int64),
        test_images=test_images[:, np.newaxis, :, :],
        test_labels=test_labels.astype(np.int64),
        max_value=_UINT8_MAX,
    )


def cifar_sizes(name: str, root: Path) -> tuple[int, int]:
    """Train and test sizes of ``cifar10``: batches are unpickled and checked, not converted."""
    paths = _cifar_paths(name, root)
    train_size = sum(len(_read_cifar_batch(path)[1]) for path in paths["train"])
    test_size = sum(len(_read_cifar_batch(path)[1]) for path in paths["test"])
    return train_size, test_size


def load_cifar(name: str, root: Path) -> RawSplits:
    """Read and check both splits of ``cifar10``."""
    paths = _cifar_paths(name, root)
    splits = {}
    for split, batch_paths in paths.items():
        batches = [_read_cifar_batch(path) for path in batch_paths]
        data = np.concatenate([batch_data for batch_data, _ in batches])
        labels = np.concatenate([batch_labels for _, batch_labels in batches])
        # Each row is channel-major: 1024 red bytes, then 1024 green, then 1024 blue.
        images = data.reshape(-1, CIFAR_CHANNELS, CIFAR_NATIVE_SIZE, CIFAR_NATIVE_SIZE)
        splits[split] = (images, labels)
    return RawSplits(
        train_images=splits["train"][0],
        train_labels=splits["train"][1],
        test_images=splits["test"][0],
        test_labels=splits["test"][1],
        max_value=_UINT8_MAX,
    )


# --------------------------------------------------------------------------- shared helpers


def _not_found(name: str, path: Path) -> UserError:
    return UserError(
        f"dataset.root: {path} not found ({name} is read from torchvision's on-disk layout "
        "under the root; greenbench never downloads)"
    )


def _require_folders(name: str, root: Path, parts: tuple[str, ...]) -> Path:
    """Walk ``root/parts...`` and return it, naming the first folder that is missing."""
    folders = [root]
    for part in parts:
        folders.append(folders[-1] / part)
    for folder in folders:
        if not folder.is_dir():
            if folder.exists():
                raise UserError(f"dataset.root: {folder} is not a folder")
            raise _not_found(name, folder)
    return folders[-1]


def _bad_file(path: Path, problem: str) -> UserError:
    return UserError(f"dataset.root: {path} {_one_line(problem)}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise _bad_file(
            path,
            f"has labels outside 0..{NUM_CLASSES - 1} "
            f"(found {int(labels.min())}..{int(labels.max())})",
        )


# --------------------------------------------------------------------------- IDX (mnist)


def _idx_paths(name: str, root: Path) -> dict[str, tuple[Path, Path]]:
    """Locate the four IDX files (plain preferred over ``.gz``), naming the first missing one."""
    raw_dir = _require_folders(name, root, (_IDX_FOLDERS[name], "raw"))
    found: dict[str, tuple[Path, Path]] = {}
    for split, (images_file, labels_file) in _IDX_FILES.items():
        found[split] = (
            _find_idx_file(name, raw_dir / images_file),
            _find_idx_file(name, raw_dir / labels_file),
        )
    return found


def _find_idx_file(name: str, plain: Path) -> Path:
    gzipped = plain.with_name(plain.name + _GZIP_SUFFIX)
    for candidate in (plain, gzipped):
        if candidate.is_file():
            return candidate
    raise _not_found(name, plain)


def _open_idx(path: Path) -> IO[bytes]:
    if path.name.endswith(_GZIP_SUFFIX):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _parse_idx_header(stream: IO[bytes], path: Path, ndim: int) -> tuple[int, ...]:
    """Read and check an IDX header: two zero bytes, dtype code, dimension count, dims."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise _bad_file(path, "is truncated (no complete IDX header)")
    if magic[0] != 0 or magic[1] != 0:
        raise _bad_file(path, f"is not an IDX file (bad magic number 0x{magic.hex()})")
    if magic[2] != _IDX_UBYTE:
        raise _bad_file(
            path, f"has IDX dtype code 0x{magic[2]:02x}, expected 0x{_IDX_UBYTE:02x} (uint8)"
        )
    if magic[3] != ndim:
        raise _bad_file(path, f"has {magic[3]} IDX dimensions, expected {ndim}")
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise _bad_file(path, "is truncated (no complete IDX header)")
    return struct.unpack(f">{ndim}I", raw_dims)


def _read_idx(path: Path, ndim: int, read_data: bool) -> tuple[tuple[int, ...], np.ndarray | None]:
    """Check one IDX file's header and length; return its dims and, if asked, its data."""
    try:
        with _open_idx(path) as stream:
            dims = _parse_idx_header(stream, path, ndim)
            if read_data:
                payload = stream.read()
                found = len(payload)
            else:
                payload = b""
                found = _remaining_length(stream, path)
    except (OSError, EOFError, zlib.error) as exc:
        raise _bad_file(path, f"could not be read ({type(exc).__name__}: {exc})") from exc

    expected = math.prod(dims)
    if found != expected:
        raise _bad_file(
            path,
            f"is truncated or corrupt (its IDX header {'x'.join(map(str, dims))} needs "
            f"{expected} data bytes, found {found})",
        )
    data = np.frombuffer(payload, dtype=np.uint8).reshape(dims) if read_data else None
    return dims, data


def _remaining_length(stream: IO[bytes], path: Path) -> int:
    """Bytes left in ``stream``: a ``stat`` for plain files, a streamed count for gzip."""
    if not path.name.endswith(_GZIP_SUFFIX):
        return path.stat().st_size - stream.tell()
    length = 0
    while chunk := stream.read(_READ_CHUNK):
        length += len(chunk)
    return length


def _check_idx_pair(
    images_path: Path, labels_path: Path, read_data: bool
) -> tuple[int, np.ndarray | None, np.ndarray | None]:
    """Check an images/labels IDX pair; return the image count and, if asked, the data."""
    image_dims, images = _read_idx(images_path, ndim=3, read_data=read_data)
    if image_dims[1:] != (IDX_NATIVE_SIZE, IDX_NATIVE_SIZE):
        raise _bad_file(
            images_path,
            f"holds {image_dims[1]}x{image_dims[2]} images, "
            f"expected {IDX_NATIVE_SIZE}x{IDX_NATIVE_SIZE}",
        )
    label_dims, labels = _read_idx(labels_path, ndim=1, read_data=read_data)
    if label_dims[0] != image_dims[0]:
        raise _bad_file(
            labels_path,
            f"holds {label_dims[0]} labels but {images_path.name} holds {image_dims[0]} images",
        )
    if labels is not None:
        _check_labels(labels, labels_path)
    return image_dims[0], images, labels


# --------------------------------------------------------------------------- CIFAR-10


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and plain containers, and nothing else."""

    def __init__(self, stream: IO[bytes], path: Path) -> None:
        super().__init__(stream, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise _bad_file(
                self._path,
                f"refers to {module}.{name}, which a CIFAR-10 batch never needs "
                "(refusing to unpickle it)",
            )
        return super().find_class(module, name)


def _cifar_paths(name: str, root: Path) -> dict[str, tuple[Path, ...]]:
    """Locate the CIFAR-10 batch files, naming the first one that is missing."""
    folder = _require_folders(name, root, (_CIFAR_FOLDER,))
    found: dict[str, tuple[Path, ...]] = {}
    for split, batch_names in (("train", _CIFAR_TRAIN_BATCHES), ("test", _CIFAR_TEST_BATCHES)):
        paths = tuple(folder / batch for batch in batch_names)
        for path in paths:
            if not path.is_file():
                raise _not_found(name, path)
        found[split] = paths
    return found


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unpickle one CIFAR-10 batch safely; return ``(n, 3072)`` uint8 data and int64 labels."""
    try:
        with open(path, "rb") as stream:
            batch = _ArrayOnlyUnpickler(stream, path).load()
    except UserError:
        raise
    except Exception as exc:  # any failure to decode a user's file is a problem with that file
        raise _bad_file(path, f"could not be unpickled ({type(exc).__name__}: {exc})") from exc

    if not isinstance(batch, dict):
        raise _bad_file(path, f"holds a {type(batch).__name__}, expected a dict")
    data = _batch_entry(batch, "data", path)
    labels = _batch_entry(batch, "labels", path)

    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise _bad_file(path, "has 'data' that is not a 2-D uint8 array")
    if data.shape[1] != _CIFAR_ROW_BYTES:
        raise _bad_file(
            path, f"has 'data' rows of {data.shape[1]} bytes, expected {_CIFAR_ROW_BYTES}"
        )
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise _bad_file(path, "has 'labels' that are not a list of integers") from exc
    if label_array.ndim != 1 or label_array.shape[0] != data.shape[0]:
        raise _bad_file(path, f"has {label_array.size} labels for {data.shape[0]} images in 'data'")
    _check_labels(label_array, path)
    return data, label_array


def _batch_entry(batch: dict[Any, Any], key: str, path: Path) -> Any:
    """``batch[key]``, accepting the key as str or as bytes (pickles written by Python 3)."""
    for candidate in (key, key.encode("ascii")):
        if candidate in batch:
            return batch[candidate]
    raise _bad_file(path, f"has no '{key}' entry")
