"""The examples in docstrings run, so they stay true."""

from __future__ import annotations

import doctest

import pytest

from greenbench import records
from greenbench.results import stats


@pytest.mark.parametrize("module", [records, stats], ids=lambda module: module.__name__)
def test_docstring_examples(module) -> None:
    failed, tried = doctest.testmod(module)
    assert tried > 0 and failed == 0
