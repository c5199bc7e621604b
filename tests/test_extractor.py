"""Tests for greenbench.quality.extractor: real training on digits, real files in tmp_path.

The digits extractor is built once per module (a few seconds on a 2-core CPU) and every test
that needs another digits build says why. Cache mechanics that do not need an accurate network
run on tiny random datasets, whose builds take a fraction of a second.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from greenbench.data import ImageData, load_dataset
from greenbench.quality import extractor as extractor_module
from greenbench.quality.extractor import (
    ACCURACY_FLOOR,
    FEATURE_DIM,
    RECIPE,
    Extractor,
    FeatureExtractor,
    cache_dir,
    data_fingerprint,
    extractor_id,
    load_or_build,
    weights_sha256,
)

DIGITS_SIZE = 16
BUILD_LOG = "building feature extractor"
LOGGER = extractor_module.__name__

# Builds the digits extractor in a fresh process and prints its sha256 (argv[1]: cache folder).
BUILD_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from greenbench.data import load_dataset
from greenbench.quality.extractor import load_or_build
extractor = load_or_build("digits", 16, load_dataset("digits", None, 16), sys.argv[1])
print(extractor.sha256)
"""


# --------------------------------------------------------------------------- fixtures, helpers


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits", None, DIGITS_SIZE)


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("digits-cache")


@pytest.fixture(scope="module")
def built(digits: ImageData, digits_cache: Path) -> Extractor:
    """The digits extractor, built once into ``digits_cache``."""
    return load_or_build("digits", DIGITS_SIZE, digits, digits_cache)


def random_data(channels: int = 1, size: int = 8, train: int = 48, test: int = 16) -> ImageData:
    """A tiny dataset of random images in [-1, 1] with labels 0..9."""
    generator = torch.Generator().manual_seed(0)
    return ImageData(
        train_images=torch.rand(train, channels, size, size, generator=generator) * 2 - 1,
        train_labels=torch.arange(train) % 10,
        test_images=torch.rand(test, channels, size, size, generator=generator) * 2 - 1,
        test_labels=torch.arange(test) % 10,
    )


def entry_files(cache: Path, entry_id: str) -> tuple[Path, Path]:
    folder = cache / "extractors"
    return folder / f"{entry_id}.pt", folder / f"{entry_id}.json"


def build_count(caplog: pytest.LogCaptureFixture) -> int:
    return sum(BUILD_LOG in record.getMessage() for record in caplog.records)


def run_build_script(cache: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", BUILD_SCRIPT, str(cache)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


# --------------------------------------------------------------------------- the digits build


def test_digits_extractor_is_accurate_frozen_and_pinned(built: Extractor, digits: ImageData):
    assert built.accuracy >= ACCURACY_FLOOR["digits"] >= 0.95

    module = built.module
    assert module.num_features == FEATURE_DIM == 64
    assert not module.training
    assert all(not p.requires_grad for p in module.parameters())
    floats = [tensor for tensor in module.state_dict().values() if tensor.is_floating_point()]
    assert {(tensor.device.type, tensor.dtype) for tensor in floats} == {("cpu", torch.float32)}

    features = module(digits.test_images)
    assert features.shape == (360, 64)
    assert features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert module.classify(digits.test_images).shape == (360, 10)

    # A parent module switching to training mode must not wake batch norm up.
    torch.nn.Sequential(module).train()
    assert not module.training

    assert re.fullmatch(r"digits-16px-r1-[0-9a-f]{16}", built.id)
    assert built.id.endswith(data_fingerprint(digits)[:16])
    assert re.fullmatch(r"[0-9a-f]{64}", built.sha256)
    assert built.sha256 == weights_sha256(module.state_dict())
    assert built.recipe == RECIPE
    assert built.recipe["version"] == 1
    record = built.record()
    assert record == {
        "id": built.id, "sha256": built.sha256, "accuracy": built.accuracy, "recipe": RECIPE,
    }
    assert json.loads(json.dumps(record)) == record


def test_the_cache_entry_describes_the_build(built: Extractor, digits: ImageData, digits_cache):
    weights, metadata_path = entry_files(digits_cache, built.id)
    metadata = json.loads(metadata_path.read_text())
    assert metadata["sha256"] == built.sha256
    assert metadata["accuracy"] == built.accuracy
    assert metadata["recipe"] == RECIPE
    assert metadata["fingerprint"] == data_fingerprint(digits)
    assert (metadata["dataset"], metadata["image_size"], metadata["channels"]) == ("digits", 16, 1)
    assert "created_at" in metadata
    state = torch.load(weights, weights_only=True)
    assert weights_sha256(state) == built.sha256


def test_building_twice_gives_identical_weights(built: Extractor, digits: ImageData, tmp_path):
    again = load_or_build("digits", DIGITS_SIZE, digits, tmp_path)  # a second real build
    assert again.sha256 == built.sha256
    assert again.accuracy == built.accuracy
    assert again.id == built.id


def test_a_fresh_process_builds_identical_weights(built: Extractor, tmp_path: Path):
    process = run_build_script(tmp_path)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert stdout.strip() == built.sha256
    assert BUILD_LOG in stderr


# --------------------------------------------------------------------------- the cache


def test_a_second_call_loads_instead_of_retraining(
    built: Extractor, digits: ImageData, digits_cache: Path, caplog: pytest.LogCaptureFixture
):
    weights, _ = entry_files(digits_cache, built.id)
    mtime = weights.stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger=LOGGER)

    loaded = load_or_build("digits", DIGITS_SIZE, digits, digits_cache)

    assert build_count(caplog) == 0
    assert weights.stat().st_mtime_ns == mtime
    assert loaded.sha256 == built.sha256
    assert loaded.accuracy == built.accuracy
    assert loaded.module is not built.module
    assert not loaded.module.training
    assert all(not p.requires_grad for p in loaded.module.parameters())
    torch.testing.assert_close(
        loaded.module(digits.test_images), built.module(digits.test_images), rtol=0, atol=0
    )


def test_corrupted_weights_are_rebuilt(
    built: Extractor, digits: ImageData, digits_cache: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    shutil.copytree(digits_cache / "extractors", tmp_path / "extractors")
    weights, _ = entry_files(tmp_path, built.id)
    weights.write_bytes(b"not a torch file at all")
    caplog.set_level(logging.INFO, logger=LOGGER)

    rebuilt = load_or_build("digits", DIGITS_SIZE, digits, tmp_path)  # a real rebuild

    assert build_count(caplog) == 1
    assert any(r.levelno == logging.WARNING and "rebuilding" in r.getMessage()
               for r in caplog.records)
    assert rebuilt.sha256 == built.sha256
    assert weights_sha256(torch.load(weights, weights_only=True)) == built.sha256


@pytest.mark.parametrize(
    "damage",
    ["garbage json", "wrong sha256", "other recipe", "truncated weights", "missing weights",
     "weights of another model"],
)
def test_damaged_entries_are_rebuilt_not_trusted(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    data = random_data()
    first = load_or_build("tiny", 8, data, tmp_path)
    weights, metadata_path = entry_files(tmp_path, first.id)
    metadata = json.loads(metadata_path.read_text())
    if damage == "garbage json":
        metadata_path.write_text("{ not json")
    elif damage == "wrong sha256":
        metadata_path.write_text(json.dumps({**metadata, "sha256": "0" * 64}))
    elif damage == "other recipe":
        metadata_path.write_text(json.dumps({**metadata, "recipe": {**RECIPE, "lr": 1.0}}))
    elif damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "missing weights":
        weights.unlink()
    else:
        torch.save(FeatureExtractor(1, 8).state_dict(), weights)
    caplog.set_level(logging.INFO, logger=LOGGER)

    again = load_or_build("tiny", 8, data, tmp_path)

    assert build_count(caplog) == 1
    assert again.sha256 == first.sha256
    assert json.loads(metadata_path.read_text())["sha256"] == first.sha256
    caplog.clear()
    load_or_build("tiny", 8, data, tmp_path)
    assert build_count(caplog) == 0


def test_cache_dir_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("GREENBENCH_CACHE", str(tmp_path / "env-cache"))
    assert cache_dir() == tmp_path / "env-cache"

    extractor = load_or_build("tiny", 8, random_data())
    assert entry_files(tmp_path / "env-cache", extractor.id)[1].is_file()

    monkeypatch.delenv("GREENBENCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "greenbench"


def test_an_unwritable_cache_builds_in_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("a file where the cache folder should be")
    caplog.set_level(logging.INFO, logger=LOGGER)

    extractor = load_or_build("tiny", 8, random_data(), not_a_folder)

    assert build_count(caplog) == 1
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert extractor.module(random_data().test_images).shape == (16, FEATURE_DIM)
    assert not_a_folder.read_text().startswith("a file")


def test_concurrent_processes_share_one_build(built: Extractor, tmp_path: Path):
    processes = [run_build_script(tmp_path) for _ in range(2)]
    results = [process.communicate(timeout=300) for process in processes]

    for process, (_, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr
    assert [stdout.strip() for stdout, _ in results] == [built.sha256] * 2
    # The lock makes the second process wait for the first one's entry instead of building.
    assert sum(stderr.count(BUILD_LOG) for _, stderr in results) == 1
    names = sorted(path.name for path in (tmp_path / "extractors").iterdir())
    assert names == [f"{built.id}.json", f"{built.id}.lock", f"{built.id}.pt"]


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_and_id_follow_the_train_data(digits: ImageData):
    fingerprint = data_fingerprint(digits)
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    assert data_fingerprint(replace(digits, train_images=digits.train_images.clone())) \
        == fingerprint

    images = digits.train_images.clone()
    images[123, 0, 5, 5] = -images[123, 0, 5, 5] + 0.5
    changed_image = data_fingerprint(replace(digits, train_images=images))
    labels = digits.train_labels.clone()
    labels[7] = (labels[7] + 1) % 10
    changed_label = data_fingerprint(replace(digits, train_labels=labels))

    assert len({fingerprint, changed_image, changed_label}) == 3
    assert extractor_id("digits", 16, changed_image) != extractor_id("digits", 16, fingerprint)
    # The test split only decides the measured accuracy, not the weights.
    assert data_fingerprint(replace(digits, test_images=digits.test_images * 0)) == fingerprint


# --------------------------------------------------------------------------- other shapes


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 16), (3, 32), (3, 64)])
def test_builds_at_other_sizes_and_channels(channels: int, size: int, tmp_path: Path):
    data = random_data(channels, size, train=24, test=8)
    extractor = load_or_build("random", size, data, tmp_path)

    assert extractor.id.startswith(f"random-{size}px-r1-")
    assert 0.0 <= extractor.accuracy <= 1.0
    features = extractor.module(data.test_images)
    assert features.shape == (8, FEATURE_DIM)
    assert features.dtype == torch.float32
    assert extractor.module.classify(data.test_images).shape == (8, 10)


def test_forward_checks_its_input():
    module = FeatureExtractor(1, 16).freeze()
    with pytest.raises(ValueError, match="shape"):
        module(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        module(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="float"):
        module(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
    assert module(torch.zeros(2, 1, 16, 16, dtype=torch.float64)).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module(torch.zeros(2, 1, 16, 16)).dtype == torch.float32


def test_load_or_build_checks_its_arguments(tmp_path: Path):
    data = random_data()
    with pytest.raises(ValueError, match="shape"):
        load_or_build("tiny", 16, data, tmp_path)
    with pytest.raises(ValueError, match="plain name"):
        load_or_build("../escape", 8, data, tmp_path)
    with pytest.raises(ValueError, match="labels"):
        load_or_build("tiny", 8, replace(data, test_labels=data.test_labels + 10), tmp_path)


# --------------------------------------------------------------------------- the caller's state


def test_building_leaves_the_callers_torch_state_alone(tmp_path: Path):
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(1234)
    rng = torch.get_rng_state()

    with torch.inference_mode():  # e.g. called from a Lightning validation step
        built = load_or_build("tiny", 8, random_data(), tmp_path / "a")
        loaded = load_or_build("tiny", 8, random_data(), tmp_path / "a")
    with torch.no_grad():
        rebuilt = load_or_build("tiny", 8, random_data(), tmp_path / "b")

    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert built.sha256 == loaded.sha256 == rebuilt.sha256
    images = random_data().test_images.requires_grad_(True)  # the modules hold normal tensors
    loaded.module(images).sum().backward()
    assert images.grad is not None


def test_torchmetrics_uses_the_module_as_its_feature_network(tmp_path: Path):
    from torchmetrics.image.fid import FrechetInceptionDistance

    data = random_data(train=80, test=80)
    extractor = load_or_build("tiny", 8, data, tmp_path)
    fid = FrechetInceptionDistance(feature=extractor.module, normalize=False)
    fid.update(data.train_images, real=True)
    fid.update(data.test_images, real=False)
    assert torch.isfinite(fid.compute())
    fid.train()  # a metric (or a LightningModule holding it) switched to training mode
    assert not extractor.module.training
