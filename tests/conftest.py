"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def extractor_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One feature-extractor cache for the whole session (and the processes it starts), never
    the user's own: each extractor is trained once per test run."""
    cache = tmp_path_factory.mktemp("greenbench-cache")
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
