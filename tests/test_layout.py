"""The package's layout rule, read from the source: which process's code may import which.

Three kinds of process, one writer: ``point/`` (the point process) never imports ``sweep/``
(the parent); the readers, ``results/``, ``report/`` and ``check/``, import neither, nor torch
or Lightning, directly or through any greenbench module they import. No import cycle anywhere.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "greenbench"
READERS = ("greenbench.results", "greenbench.report", "greenbench.check")
HEAVY = ("torch", "lightning", "torchmetrics", "pynvml", "codecarbon")
MAX_TOP_LEVEL_MODULES = 10
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, str]:
    return {module_name(path): path.read_text(encoding="utf-8")
            for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(source: str, known: set[str]) -> set[str]:
    """Every module an ``import`` statement in ``source`` names, at any depth of the code;
    ``from a import b`` names ``a.b`` when that is a greenbench module, else ``a``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return found


def import_graph(modules: dict[str, str]) -> dict[str, set[str]]:
    known = set(modules)
    return {name: imports_of(source, known) for name, source in modules.items()}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through greenbench modules."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def violations(graph: dict[str, set[str]]) -> list[str]:
    """The imports that break the layout rule, one line each."""
    found = []
    for module in sorted(graph):
        if within(module, "greenbench.point"):
            found += [f"{module} imports {t}" for t in sorted(graph[module])
                      if within(t, "greenbench.sweep")]
        if any(within(module, reader) for reader in READERS):
            for target in sorted(reachable(graph, module)):
                forbidden = ("greenbench.point", "greenbench.sweep", *HEAVY)
                if any(within(target, f) for f in forbidden):
                    found.append(f"{module} reaches {target}")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among greenbench modules (strongly connected components, Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_keeps_the_layout_rule() -> None:
    assert violations(import_graph(sources())) == []


def test_the_rule_catches_a_forbidden_import() -> None:
    modules = sources()
    modules["greenbench.point.extra"] = "from greenbench.sweep.runner import run_sweep\n"
    modules["greenbench.report.extra"] = "def f():\n    import torch\n"
    modules["greenbench.check.extra"] = "from greenbench.point import run\n"
    # indirectly: a reader importing a building block that imports Lightning
    modules["greenbench.results.extra"] = "from greenbench.energy import callback\n"
    found = violations(import_graph(modules))
    assert "greenbench.point.extra imports greenbench.sweep.runner" in found
    assert "greenbench.report.extra reaches torch" in found
    assert "greenbench.check.extra reaches greenbench.point.run" in found
    assert "greenbench.results.extra reaches lightning.pytorch" in found


def test_no_import_cycle() -> None:
    assert cycles(import_graph(sources())) == []
    looped = {"greenbench.a": {"greenbench.b"}, "greenbench.b": {"greenbench.a"}}
    assert cycles(looped) == [["greenbench.a", "greenbench.b"]]


def test_module_count_and_size() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("spelling", [
    r'"model", "dataset", "image_size", "precision"',  # the config keys
    r'"skipped", "diverged"|"diverged", "failed"',  # the statuses
    r'"warmup", "train", "eval"',  # the phases
    r'\("cpu", "ram"\)',  # the node-level components
    r'"kid", "fid", "nll_nats"',  # the curve keys
    r"stats\.t\.ppf",  # the Student-t quantile
])
def test_each_shared_list_is_spelled_once(spelling: str) -> None:
    where = [name for name, source in sources().items() if re.search(spelling, source)]
    assert len(where) <= 1, where


def test_readers_and_the_command_line_do_not_load_torch() -> None:
    code = ("import sys, greenbench, greenbench.cli, greenbench.results, "
            "greenbench.report.builder, greenbench.check.command; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
