"""Tests for greenbench.data: real files written to tmp_path, no mocks, no downloads."""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from greenbench.data import (
    DATASETS,
    DEFAULT_IMAGE_SIZE,
    DatasetInfo,
    ImageData,
    fraction_indices,
    inspect_dataset,
    load_dataset,
    subset_size,
)
from greenbench.errors import UserError
from tests.helpers import IDX_NAMES, TEST_COUNT, TRAIN_COUNT, idx_bytes, write_idx_dataset

# --------------------------------------------------------------------------- helpers


def to_signed_unit(values: np.ndarray, max_value: float) -> torch.Tensor:
    """What load_dataset should produce at native size: raw / max mapped to [-1, 1]."""
    return torch.from_numpy(np.asarray(values, dtype=np.float32)) / max_value * 2 - 1


def assert_one_line_user_error(excinfo: pytest.ExceptionInfo[UserError], *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def write_cifar_dataset(
    root: Path, protocol: int = 2, bytes_keys: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write 5 train batches of 2 images and a test batch of 3; return the data written."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    train_data = rng.integers(0, 256, size=(10, 3072), dtype=np.uint8)
    train_labels = np.arange(10) % 10
    test_data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    test_labels = np.array([3, 1, 4])

    def dump(path: Path, data: np.ndarray, labels: np.ndarray) -> None:
        keys = (b"data", b"labels") if bytes_keys else ("data", "labels")
        batch = {keys[0]: data, keys[1]: [int(label) for label in labels]}
        path.write_bytes(pickle.dumps(batch, protocol=protocol))

    for i in range(5):
        rows = slice(2 * i, 2 * i + 2)
        dump(folder / f"data_batch_{i + 1}", train_data[rows], train_labels[rows])
    dump(folder / "test_batch", test_data, test_labels)
    return train_data, train_labels, test_data, test_labels


@pytest.fixture(scope="module")
def digits16() -> ImageData:
    return load_dataset("digits", None, 16)


@pytest.fixture(scope="module")
def digits_full() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


# --------------------------------------------------------------------------- constants, import


def test_public_constants() -> None:
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "cifar10")
    assert DEFAULT_IMAGE_SIZE == {"digits": 16, "mnist": 28, "fashion-mnist": 28, "cifar10": 32}


def test_import_does_not_pull_in_torch_or_sklearn() -> None:
    code = (
        "import sys, greenbench.data\n"
        "heavy = sorted(m for m in ('torch', 'sklearn') if m in sys.modules)\n"
        "print(','.join(heavy) or 'none')\n"
    )
    project_root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project_root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "none"


def test_unknown_dataset_lists_the_choices() -> None:
    for call in (lambda: inspect_dataset("svhn", None), lambda: load_dataset("svhn", None, 16)):
        with pytest.raises(UserError) as excinfo:
            call()
        assert_one_line_user_error(excinfo, "svhn", *DATASETS)


# --------------------------------------------------------------------------- digits


def test_digits_split_sizes_and_stratification(
    digits16: ImageData, digits_full: tuple[np.ndarray, np.ndarray]
) -> None:
    _, full_labels = digits_full
    assert digits16.train_labels.shape == (1437,)
    assert digits16.test_labels.shape == (360,)
    assert digits16.train_labels.dtype == torch.int64
    assert digits16.test_labels.dtype == torch.int64

    full_counts = np.bincount(full_labels, minlength=10)
    train_counts = np.bincount(digits16.train_labels.numpy(), minlength=10)
    test_counts = np.bincount(digits16.test_labels.numpy(), minlength=10)
    np.testing.assert_array_equal(train_counts + test_counts, full_counts)
    assert np.all(np.abs(test_counts - 0.2 * full_counts) <= 1)


def test_digits_split_holds_the_original_images(
    digits_full: tuple[np.ndarray, np.ndarray],
) -> None:
    full_images, full_labels = digits_full
    data = load_dataset("digits", None, 8)
    expected = to_signed_unit(full_images, 16.0).unsqueeze(1)
    # Each split image is one of the bundled images with the same label, none used twice.
    where: dict[tuple[bytes, int], list[int]] = {}
    for index, image in enumerate(expected.reshape(len(expected), -1)):
        where.setdefault((image.numpy().tobytes(), int(full_labels[index])), []).append(index)
    used: set[int] = set()
    for images, labels in (
        (data.train_images, data.train_labels),
        (data.test_images, data.test_labels),
    ):
        for image, label in zip(images.reshape(len(images), -1), labels, strict=True):
            match = where[(image.numpy().tobytes(), int(label))].pop()  # KeyError: not bundled
            used.add(match)
    assert len(used) == len(full_labels)


def test_digits_value_range_reaches_both_ends(digits16: ImageData) -> None:
    for images in (digits16.train_images, digits16.test_images):
        assert images.dtype == torch.float32
        assert images.min() >= -1.0 and images.max() <= 1.0
        assert images.min() < -0.99
        assert images.max() > 0.95


@pytest.mark.parametrize("image_size", [8, 16, 28, 32])
def test_digits_shapes(image_size: int) -> None:
    data = load_dataset("digits", None, image_size)
    assert data.train_images.shape == (1437, 1, image_size, image_size)
    assert data.test_images.shape == (360, 1, image_size, image_size)
    assert data.train_images.min() >= -1.0 and data.train_images.max() <= 1.0


def test_digits_rejects_a_root(tmp_path: Path) -> None:
    expected = "dataset.root: digits is bundled with scikit-learn and takes no root"
    for call in (
        lambda: inspect_dataset("digits", tmp_path),
        lambda: load_dataset("digits", str(tmp_path), 16),
    ):
        with pytest.raises(UserError) as excinfo:
            call()
        assert str(excinfo.value) == expected


def test_inspect_digits_matches_load(digits16: ImageData) -> None:
    info = inspect_dataset("digits", None)
    assert info == DatasetInfo(
        name="digits",
        train_size=len(digits16.train_labels),
        test_size=len(digits16.test_labels),
        channels=1,
        num_classes=10,
        native_size=8,
    )


def test_load_is_deterministic(digits16: ImageData) -> None:
    again = load_dataset("digits", None, 16)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(digits16, field), getattr(again, field))


# --------------------------------------------------------------------------- subsets


def test_subset_size() -> None:
    assert subset_size(1437, 0.1) == 143
    assert subset_size(1437, 0.5) == 718
    assert subset_size(100, 0.999) == 99
    assert subset_size(1437, 1.0) == 1437
    assert subset_size(1437, 2.0) == 1437
    assert subset_size(10, 0.0) == 0


LABELS = np.repeat(np.arange(10), [50, 30, 20, 7, 13, 40, 1, 9, 25, 5])


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5, 0.73, 0.999])
def test_fraction_indices_size_order_and_stratification(fraction: float) -> None:
    rng = np.random.default_rng(3)
    labels = rng.permutation(LABELS)
    indices = fraction_indices(labels, fraction, seed=11)

    assert len(indices) == subset_size(len(labels), fraction)
    assert np.all(np.diff(indices) > 0)
    assert indices.min() >= 0 and indices.max() < len(labels)

    picked = np.bincount(labels[indices], minlength=10)
    proportional = np.bincount(labels, minlength=10) * len(indices) / len(labels)
    assert np.all(np.abs(picked - proportional) < 1)


def test_fraction_indices_largest_remainder_ties_go_to_smaller_label() -> None:
    labels = np.repeat(np.arange(3), 4)  # three equal classes of four
    indices = fraction_indices(labels, 5 / 12, seed=0)  # 5 images: shares 1.67 each
    np.testing.assert_array_equal(np.bincount(labels[indices], minlength=3), [2, 2, 1])


def test_fraction_indices_determinism_and_seeds() -> None:
    first = fraction_indices(LABELS, 0.3, seed=5)
    np.testing.assert_array_equal(first, fraction_indices(LABELS.copy(), 0.3, seed=5))
    others = [fraction_indices(LABELS, 0.3, seed=seed) for seed in (6, 7, 8)]
    assert all(not np.array_equal(first, other) for other in others)


def test_fraction_indices_full_fraction_is_everything() -> None:
    np.testing.assert_array_equal(fraction_indices(LABELS, 1.0, seed=4), np.arange(len(LABELS)))


def test_fraction_indices_on_real_digits_labels(digits16: ImageData) -> None:
    labels = digits16.train_labels.numpy()
    indices = fraction_indices(labels, 0.1, seed=0)
    assert len(indices) == 143
    picked = np.bincount(labels[indices], minlength=10)
    assert np.all(np.abs(picked - np.bincount(labels, minlength=10) * 0.1) < 1)


# --------------------------------------------------------------------------- mnist, fashion-mnist


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gz"])
def test_idx_dataset_round_trips(tmp_path: Path, name: str, gzipped: bool) -> None:
    arrays = write_idx_dataset(tmp_path, name, gzipped=gzipped)

    info = inspect_dataset(name, tmp_path)
    assert info == DatasetInfo(name, TRAIN_COUNT, TEST_COUNT, 1, 10, 28)

    data = load_dataset(name, str(tmp_path), 28)
    assert data.train_images.shape == (TRAIN_COUNT, 1, 28, 28)
    assert data.test_images.shape == (TEST_COUNT, 1, 28, 28)
    expected_train = to_signed_unit(arrays["train-images-idx3-ubyte"], 255.0).unsqueeze(1)
    expected_test = to_signed_unit(arrays["t10k-images-idx3-ubyte"], 255.0).unsqueeze(1)
    torch.testing.assert_close(data.train_images, expected_train, rtol=0, atol=1e-6)
    torch.testing.assert_close(data.test_images, expected_test, rtol=0, atol=1e-6)
    assert data.train_images[0, 0, 0, 0].item() == -1.0
    assert data.train_images[0, 0, 0, 1].item() == 1.0
    assert data.train_labels.dtype == torch.int64
    np.testing.assert_array_equal(data.train_labels.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(data.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_idx_resize_and_plain_file_preferred(tmp_path: Path) -> None:
    arrays = write_idx_dataset(tmp_path, "mnist")
    raw_dir = tmp_path / "MNIST" / "raw"
    # A stale, broken .gz next to the plain file must be ignored.
    (raw_dir / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")

    data = load_dataset("mnist", tmp_path, 14)
    assert data.train_images.shape == (TRAIN_COUNT, 1, 14, 14)
    assert data.test_images.shape == (TEST_COUNT, 1, 14, 14)
    assert data.train_images.min() >= -1.0 and data.train_images.max() <= 1.0
    # The documented recipe: scale to [0, 1], antialiased bilinear resize, clamp, map to [-1, 1].
    unit = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float().unsqueeze(1) / 255
    resized = torch.nn.functional.interpolate(
        unit, size=(14, 14), mode="bilinear", align_corners=False, antialias=True
    )
    expected = resized.clamp(0, 1) * 2 - 1
    torch.testing.assert_close(data.train_images, expected, rtol=0, atol=1e-6)
    # Antialiasing smooths the random pixels: far less spread than plain subsampling would keep.
    assert (
        data.train_images.std() < 0.6 * to_signed_unit(arrays["train-images-idx3-ubyte"], 255).std()
    )


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_root_is_required(name: str) -> None:
    with pytest.raises(UserError) as excinfo:
        inspect_dataset(name, None)
    message = assert_one_line_user_error(excinfo, f"dataset.root: required for {name}")
    assert "torchvision" in message


def test_missing_root_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as excinfo:
        inspect_dataset("mnist", missing)
    message = assert_one_line_user_error(excinfo, f"{missing} not found", "never downloads")
    assert message.startswith("dataset.root: ")


def test_missing_raw_folder(tmp_path: Path) -> None:
    (tmp_path / "MNIST").mkdir()
    with pytest.raises(UserError) as excinfo:
        load_dataset("mnist", tmp_path, 28)
    assert_one_line_user_error(excinfo, f"dataset.root: {tmp_path / 'MNIST' / 'raw'} not found")


def test_fashion_mnist_looks_in_its_own_folder(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, "mnist")
    with pytest.raises(UserError) as excinfo:
        inspect_dataset("fashion-mnist", tmp_path)
    assert_one_line_user_error(excinfo, f"{tmp_path / 'FashionMNIST'} not found")


@pytest.mark.parametrize("missing_name", IDX_NAMES)
def test_missing_single_idx_file(tmp_path: Path, missing_name: str) -> None:
    write_idx_dataset(tmp_path, "mnist")
    missing = tmp_path / "MNIST" / "raw" / missing_name
    missing.unlink()
    with pytest.raises(UserError) as excinfo:
        inspect_dataset("mnist", tmp_path)
    message = assert_one_line_user_error(excinfo, "mnist is read from torchvision's on-disk layout")
    assert message.startswith(f"dataset.root: {missing} not found")


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gz"])
def test_truncated_idx_file(tmp_path: Path, gzipped: bool) -> None:
    arrays = write_idx_dataset(tmp_path, "mnist", gzipped=gzipped)
    suffix = ".gz" if gzipped else ""
    bad = tmp_path / "MNIST" / "raw" / f"train-images-idx3-ubyte{suffix}"
    content = idx_bytes(arrays["train-images-idx3-ubyte"])[:-100]
    bad.write_bytes(gzip.compress(content) if gzipped else content)
    for call in (
        lambda: inspect_dataset("mnist", tmp_path),
        lambda: load_dataset("mnist", tmp_path, 28),
    ):
        with pytest.raises(UserError) as excinfo:
            call()
        assert_one_line_user_error(excinfo, f"dataset.root: {bad} ", "truncated")


def test_cut_off_gzip_stream(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, "mnist", gzipped=True)
    bad = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-12])
    with pytest.raises(UserError) as excinfo:
        inspect_dataset("mnist", tmp_path)
    assert_one_line_user_error(excinfo, f"dataset.root: {bad} ")


@pytest.mark.parametrize(
    ("magic", "fragment"),
    [
        (bytes([1, 0, 0x08, 3]), "magic"),
        (bytes([0, 0, 0x0D, 3]), "dtype"),
        (bytes([0, 0, 0x08, 2]), "dimensions"),
    ],
    ids=["magic", "dtype", "ndim"],
)
def test_bad_idx_header(tmp_path: Path, magic: bytes, fragment: str) -> None:
    arrays = write_idx_dataset(tmp_path, "mnist")
    bad = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    bad.write_bytes(idx_bytes(arrays["t10k-images-idx3-ubyte"], magic=magic))
    with pytest.raises(UserError) as excinfo:
        inspect_dataset("mnist", tmp_path)
    assert_one_line_user_error(excinfo, f"dataset.root: {bad} ", fragment)


def test_idx_label_count_must_match_images(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, "mnist")
    bad = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    bad.write_bytes(idx_bytes(np.zeros(TRAIN_COUNT - 1, dtype=np.uint8)))
    with pytest.raises(UserError) as excinfo:
        inspect_dataset("mnist", tmp_path)
    assert_one_line_user_error(excinfo, str(bad), f"{TRAIN_COUNT - 1} labels")


def test_idx_labels_out_of_range(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, "mnist")
    bad = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    bad.write_bytes(idx_bytes(np.full(TEST_COUNT, 10, dtype=np.uint8)))
    with pytest.raises(UserError) as excinfo:
        load_dataset("mnist", tmp_path, 28)
    assert_one_line_user_error(excinfo, str(bad), "labels outside 0..9")


# --------------------------------------------------------------------------- cifar10


@pytest.mark.parametrize(
    ("protocol", "bytes_keys"), [(2, False), (5, False), (2, True)], ids=["p2", "p5", "bytes"]
)
def test_cifar_round_trips(tmp_path: Path, protocol: int, bytes_keys: bool) -> None:
    train_data, train_labels, test_data, test_labels = write_cifar_dataset(
        tmp_path, protocol=protocol, bytes_keys=bytes_keys
    )

    assert inspect_dataset("cifar10", tmp_path) == DatasetInfo("cifar10", 10, 3, 3, 10, 32)

    data = load_dataset("cifar10", tmp_path, 32)
    assert data.train_images.shape == (10, 3, 32, 32)
    assert data.test_images.shape == (3, 3, 32, 32)
    expected = to_signed_unit(train_data, 255.0).reshape(10, 3, 32, 32)
    torch.testing.assert_close(data.train_images, expected, rtol=0, atol=1e-6)
    expected_test = to_signed_unit(test_data, 255.0).reshape(3, 3, 32, 32)
    torch.testing.assert_close(data.test_images, expected_test, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(data.train_labels.numpy(), train_labels)
    np.testing.assert_array_equal(data.test_labels.numpy(), test_labels)
    assert data.train_labels.dtype == torch.int64


def test_cifar_channel_order(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    row = np.concatenate(
        [np.full(1024, 255), np.zeros(1024), np.full(1024, 51)]  # red, green, blue planes
    ).astype(np.uint8)
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch_dict = {"data": row[np.newaxis, :], "labels": [2]}
        (folder / batch).write_bytes(pickle.dumps(batch_dict, protocol=2))

    data = load_dataset("cifar10", tmp_path, 16)
    assert data.train_images.shape == (5, 3, 16, 16)
    torch.testing.assert_close(data.train_images[:, 0], torch.full((5, 16, 16), 1.0))
    torch.testing.assert_close(data.train_images[:, 1], torch.full((5, 16, 16), -1.0))
    torch.testing.assert_close(data.train_images[:, 2], torch.full((5, 16, 16), 51 / 255 * 2 - 1))


def test_cifar_missing_batch_is_named(tmp_path: Path) -> None:
    write_cifar_dataset(tmp_path)
    missing = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    missing.unlink()
    with pytest.raises(UserError) as excinfo:
        inspect_dataset("cifar10", tmp_path)
    message = assert_one_line_user_error(excinfo, "cifar10 is read from torchvision's")
    assert message.startswith(f"dataset.root: {missing} not found")


def test_cifar_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError) as excinfo:
        load_dataset("cifar10", tmp_path, 32)
    assert_one_line_user_error(excinfo, f"dataset.root: {tmp_path / 'cifar-10-batches-py'} not")


class _RunsAShellCommand:
    """Unpickling this object would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_malicious_pickle_is_refused(tmp_path: Path, protocol: int) -> None:
    write_cifar_dataset(tmp_path)
    marker = tmp_path / "pwned"
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    payload = {"data": _RunsAShellCommand(marker), "labels": [0]}
    bad.write_bytes(pickle.dumps(payload, protocol=protocol))

    for call in (
        lambda: inspect_dataset("cifar10", tmp_path),
        lambda: load_dataset("cifar10", tmp_path, 32),
    ):
        with pytest.raises(UserError) as excinfo:
            call()
        assert_one_line_user_error(excinfo, f"dataset.root: {bad} ", "system")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"garbage, not a pickle", "could not be unpickled"),
        (pickle.dumps([1, 2, 3], protocol=2), "expected a dict"),
        (pickle.dumps({"labels": [0]}, protocol=2), "no 'data'"),
        (pickle.dumps({"data": np.zeros((1, 100), np.uint8), "labels": [0]}), "3072"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}), "1 labels"),
        (pickle.dumps({"data": np.zeros((1, 3072), np.float32), "labels": [0]}), "uint8"),
    ],
    ids=["garbage", "list", "no-data", "row-size", "label-count", "dtype"],
)
def test_cifar_malformed_batch(tmp_path: Path, content: bytes, fragment: str) -> None:
    write_cifar_dataset(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_5"
    bad.write_bytes(content)
    with pytest.raises(UserError) as excinfo:
        inspect_dataset("cifar10", tmp_path)
    assert_one_line_user_error(excinfo, f"dataset.root: {bad} ", fragment)
