"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run only where torch sees a CUDA GPU, one after another on one
    worker (they measure the GPU's energy); elsewhere they are skipped."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    for item in gpu_tests:
        item.add_marker(pytest.mark.xdist_group("gpu"))
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (marker gpu); none here")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def extractor_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One feature-extractor cache for the whole session (and the processes it starts), never
    the user's own: each extractor is trained once per test run, also when the suite runs on
    several workers (pytest-xdist), which share the cache under its lock."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    cache = shared / "greenbench-cache"
    cache.mkdir(exist_ok=True)
    previous = os.environ.get("GREENBENCH_CACHE")
    os.environ["GREENBENCH_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("GREENBENCH_CACHE", None)
    else:
        os.environ["GREENBENCH_CACHE"] = previous


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path
